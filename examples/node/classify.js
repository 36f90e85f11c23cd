#!/usr/bin/env node
// Classify images with a shoal model bundle from Node.js, through onnxruntime-node.
//
//   npm install --ignore-scripts        # once, in this folder
//   node classify.js BUNDLE_DIR IMAGE... [--top N] [--json]
//
// BUNDLE_DIR is an unzipped bundle (a folder with shoal.json and model.onnx; unzip a .shoal
// file to get one). Each IMAGE is a JPEG or PNG file. The output is that of `shoal classify`:
// one line per image, `photo.jpg  dolphin 97.12%  seahorse 2.88%`, ending with
// `UNFAMILIAR (like none of the training images)` when the image looks like none of the
// training images; with --json one JSON list of {source, predictions, unfamiliar,
// unfamiliar_score} (and unfamiliar_reason where the model cannot tell).
//
// The preprocessing repeats what shoal does in Python (shoal.data.imageops.prepare, then the
// centre crop), pixel for pixel:
//   - decode with libvips (wasm-vips: WebAssembly, no native binary), whose JPEG decoder is
//     libjpeg-turbo's, as Pillow's is; a JPEG four or more times the dataset size on both
//     sides is decoded at 1/2, 1/4 or 1/8 scale as Pillow's `draft` does (DCT scaling). (sharp
//     bundles the same libvips, but reaches reduced-scale decoding only through its own resize.)
//   - turn it upright by its EXIF orientation;
//   - RGB with alpha composited on white, or grayscale, as the manifest says;
//   - resize to input.dataset_size with Pillow's bilinear filter (antialiased when
//     shrinking), re-implemented below bit for bit, for the "squash" and "crop" resize modes
//     ("fill" and "half" are refused: their noise comes from NumPy's generator);
//   - centre-crop to input.size when input.crop is set;
//   - float32 NCHW pixels 0..255 (the normalisation is inside the ONNX graph).
// One approximation: a grayscale model reading a colour JPEG. Pillow takes the JPEG's own
// luma (Y) channel; libvips gives RGB, converted here with Pillow's RGB -> L formula, which
// can differ from Y by one level.
"use strict";

const fs = require("fs");
const path = require("path");
const ort = require("onnxruntime-node");
const Vips = require("wasm-vips");

const PRECISION_BITS = 32 - 8 - 2; // Pillow's fixed-point precision for 8-bit resampling
const FORMAT = 2; // the newest bundle format this example reads
const DRAFT_GAP = 2.0; // shoal.data.imageops.DRAFT_GAP
const UNFAMILIAR = "UNFAMILIAR (like none of the training images)";
const NO_VERDICT = "its bundle was written before shoal had the verdict; re-export it (shoal export MODEL --out ...)";

function usage(message) {
  if (message) console.error(`Error: ${message}`);
  console.error("usage: node classify.js BUNDLE_DIR IMAGE... [--top N] [--json]");
  process.exit(2);
}

function parseArgs(argv) {
  const args = { top: 5, json: false, positional: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--json") args.json = true;
    else if (a === "--top") {
      args.top = Number(argv[++i]);
      if (!Number.isInteger(args.top) || args.top < 1) usage(`--top must be an integer >= 1, got ${argv[i]}`);
    } else if (a === "-h" || a === "--help") usage();
    else args.positional.push(a);
  }
  if (args.positional.length < 2) usage("give a bundle folder and at least one image");
  return args;
}

function readManifest(bundleDir) {
  const file = path.join(bundleDir, "shoal.json");
  if (!fs.existsSync(file)) {
    throw new Error(`${bundleDir} is not a bundle folder (no shoal.json); unzip a .shoal file first`);
  }
  const manifest = JSON.parse(fs.readFileSync(file, "utf8"));
  if (!Number.isInteger(manifest.format) || manifest.format > FORMAT) {
    throw new Error(`bundle format ${manifest.format} is newer than this example reads (${FORMAT}); update examples/node`);
  }
  return manifest;
}

// -- decoding ---------------------------------------------------------------------------------
let vipsModule = null;
function vips() {
  if (vipsModule === null) {
    vipsModule = Vips({ dynamicLibraries: [] }).then((v) => {
      v.concurrency(1); // one image at a time: no worker threads to start
      return v;
    });
  }
  return vipsModule;
}

// Pillow's JpegImageFile.draft as shoal.data.imageops._draft asks for it: the DCT scale (1, 2, 4
// or 8) that keeps the decoded image at least DRAFT_GAP times the target on both sides.
function draftScale(width, height, target, orientation) {
  let [w, h] = target;
  if (orientation >= 5 && orientation <= 8) [w, h] = [h, w]; // the target of the stored (unrotated) image
  const want = [Math.max(1, Math.trunc(w * DRAFT_GAP)), Math.max(1, Math.trunc(h * DRAFT_GAP))];
  if (!(want[0] * 2 <= width && want[1] * 2 <= height)) return 1;
  const scale = Math.min(Math.floor(width / want[0]), Math.floor(height / want[1]));
  return [8, 4, 2, 1].find((s) => scale >= s);
}

// libjpeg decodes at 1/s scale to ceil(size / s) pixels; libvips keeps floor(size / s). Declaring
// the size rounded up to a multiple of s (inside the same 8-pixel blocks, so the coded data is
// unchanged) makes libvips keep the last row and column too.
function roundUpFrameSize(jpegBytes, s) {
  const b = Buffer.from(jpegBytes);
  let i = 2;
  while (i + 9 < b.length && b[i] === 0xff) {
    const marker = b[i + 1];
    if (marker === 0xff) { i += 1; continue; } // fill byte
    const length = b.readUInt16BE(i + 2);
    if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) {
      const h = b.readUInt16BE(i + 5), w = b.readUInt16BE(i + 7);
      b.writeUInt16BE(Math.ceil(h / s) * s, i + 5);
      b.writeUInt16BE(Math.ceil(w / s) * s, i + 7);
      return b;
    }
    i += 2 + length;
  }
  return jpegBytes; // no frame header found: let libvips report what is wrong
}

function orientationOf(image) {
  return image.getTypeof("orientation") !== 0 ? image.getInt("orientation") : 1;
}

// 8-bit interleaved pixels with 1 to 4 bands (gray, gray+alpha, RGB, RGBA), as Pillow has them.
function to8bit(image, file) {
  const raw = image.writeToMemory();
  const n = image.width * image.height * image.bands;
  if (image.format === "uchar") return new Uint8Array(raw.buffer, raw.byteOffset, n);
  if (image.format !== "ushort") {
    throw new Error(`cannot read image ${file}: pixel format ${image.format} is not supported by this example`);
  }
  const v = new Uint16Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + n * 2));
  const out = new Uint8Array(n);
  if (image.bands === 1) {
    // Pillow opens a 16-bit gray PNG as I;16, which shoal scales: (v * 255 + 32767) // 65535
    for (let i = 0; i < n; i++) out[i] = Math.floor((v[i] * 255 + 32767) / 65535);
  } else {
    for (let i = 0; i < n; i++) out[i] = v[i] >> 8; // Pillow reads 16-bit RGB(A) and LA by their high bytes
  }
  return out;
}

// Decode an image file as shoal.data.imageops.open_image does before resizing it to `target`.
async function decode(file, target) {
  let data;
  try {
    data = fs.readFileSync(file);
  } catch (err) {
    const why = { ENOENT: "file not found (or a broken symbolic link)", EACCES: "permission denied: the file cannot be read",
      EISDIR: "is a folder, not an image file" }[err.code] || `cannot be read (${err.message})`;
    throw new Error(`cannot read image ${file}: ${why}`);
  }
  if (data.length === 0) throw new Error(`cannot read image ${file}: empty file (0 bytes)`);
  const isJpeg = data[0] === 0xff && data[1] === 0xd8;
  const isPng = data.slice(1, 4).toString("latin1") === "PNG";
  if (!isJpeg && !isPng) throw new Error(`cannot read image ${file}: this example reads JPEG and PNG files only`);
  const v = await vips();
  const loaded = [];
  try {
    let image = isJpeg ? v.Image.jpegloadBuffer(data) : v.Image.pngloadBuffer(data); // the header only, so far
    loaded.push(image);
    if (isJpeg) {
      if (image.interpretation === "cmyk") {
        throw new Error(`cannot read image ${file}: CMYK JPEGs are not supported by this example; use the Python runtime`);
      }
      const s = draftScale(image.width, image.height, target, orientationOf(image));
      if (s > 1) {
        image = v.Image.jpegloadBuffer(roundUpFrameSize(data, s), { shrink: s });
        loaded.push(image);
      }
    }
    if (orientationOf(image) !== 1) {
      image = image.autorot();
      loaded.push(image);
    }
    const bands = image.bands;
    if (bands < 1 || bands > 4) throw new Error(`cannot read image ${file}: ${bands} bands are not supported by this example`);
    return { width: image.width, height: image.height, bands, pixels: to8bit(image, file) };
  } catch (err) {
    if (err.message.startsWith("cannot read image")) throw err;
    throw new Error(`cannot read image ${file}: corrupt image data (${String(err.message).trim().split("\n")[0]})`);
  } finally {
    for (const image of loaded) image.delete();
  }
}

function div255(v) {
  const tmp = v + 128;
  return ((tmp >> 8) + tmp) >> 8;
}

// Pillow: alpha composited on a white background (Image.paste with the alpha as mask), gray
// copied to R, G and B, and RGB -> L as ((R*19595 + G*38470 + B*7471 + 0x8000) >> 16).
function toChannels(image, channels) {
  const n = image.width * image.height;
  const b = image.bands, alpha = b === 2 || b === 4, gray = b <= 2;
  const out = new Uint8Array(n * channels);
  for (let i = 0; i < n; i++) {
    const p = image.pixels;
    let r = p[i * b], g = gray ? r : p[i * b + 1], bl = gray ? r : p[i * b + 2];
    if (alpha) {
      const a = p[i * b + b - 1];
      r = div255(255 * (255 - a) + r * a);
      g = gray ? r : div255(255 * (255 - a) + g * a);
      bl = gray ? r : div255(255 * (255 - a) + bl * a);
    }
    if (channels === 3) {
      out[i * 3] = r; out[i * 3 + 1] = g; out[i * 3 + 2] = bl;
    } else {
      out[i] = gray ? r : (r * 19595 + g * 38470 + bl * 7471 + 0x8000) >> 16;
    }
  }
  return { width: image.width, height: image.height, channels, pixels: out };
}

// -- Pillow's resampling (Resample.c), bilinear filter --------------------------------------
function coefficients(inSize, outSize) {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1.0);
  const support = 1.0 * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Int32Array(outSize * ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1.0 / filterscale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    const k = new Float64Array(xmax);
    let ww = 0.0;
    for (let x = 0; x < xmax; x++) {
      const t = Math.abs((x + xmin - center + 0.5) * ss);
      const w = t < 1.0 ? 1.0 - t : 0.0;
      k[x] = w;
      ww += w;
    }
    for (let x = 0; x < xmax; x++) {
      const v = ww !== 0.0 ? k[x] / ww : k[x];
      kk[xx * ksize + x] = Math.trunc(v < 0 ? -0.5 + v * (1 << PRECISION_BITS) : 0.5 + v * (1 << PRECISION_BITS));
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { ksize, bounds, kk };
}

function clip8(v) {
  const s = v >> PRECISION_BITS; // arithmetic shift: floor, as in C on int32
  return s < 0 ? 0 : s > 255 ? 255 : s;
}

function resizeHorizontal(img, outW, firstRow, rows) {
  const { ksize, bounds, kk } = coefficients(img.width, outW);
  const c = img.channels;
  const out = new Uint8Array(outW * rows * c);
  for (let y = 0; y < rows; y++) {
    const rowIn = (y + firstRow) * img.width * c;
    for (let xx = 0; xx < outW; xx++) {
      const xmin = bounds[xx * 2], xmax = bounds[xx * 2 + 1];
      for (let ch = 0; ch < c; ch++) {
        let ss = 1 << (PRECISION_BITS - 1);
        for (let x = 0; x < xmax; x++) ss += img.pixels[rowIn + (x + xmin) * c + ch] * kk[xx * ksize + x];
        out[(y * outW + xx) * c + ch] = clip8(ss);
      }
    }
  }
  return { width: outW, height: rows, channels: c, pixels: out };
}

function resizeVertical(img, outH, vert) {
  const { ksize, bounds, kk } = vert;
  const c = img.channels, w = img.width;
  const out = new Uint8Array(w * outH * c);
  for (let yy = 0; yy < outH; yy++) {
    const ymin = bounds[yy * 2], ymax = bounds[yy * 2 + 1];
    for (let xx = 0; xx < w; xx++) {
      for (let ch = 0; ch < c; ch++) {
        let ss = 1 << (PRECISION_BITS - 1);
        for (let y = 0; y < ymax; y++) ss += img.pixels[((y + ymin) * w + xx) * c + ch] * kk[yy * ksize + y];
        out[(yy * w + xx) * c + ch] = clip8(ss);
      }
    }
  }
  return { width: w, height: outH, channels: c, pixels: out };
}

// Image.resize((w, h), BILINEAR). Two passes, each rounding to 8 bits, so their order matters:
// Pillow 13 resamples vertically first when the height shrinks by more than twice as many pixels
// as the width does; otherwise (and always before Pillow 13) the horizontal pass comes first,
// over only the rows the vertical pass needs.
function resize(img, outW, outH) {
  if (img.width === outW && img.height === outH) return img;
  const vert = coefficients(img.height, outH);
  const needH = outW !== img.width, needV = outH !== img.height;
  if (needH && needV && outH < img.height && img.height - outH > 2 * (img.width - outW)) {
    return resizeHorizontal(resizeVertical(img, outH, vert), outW, 0, outH);
  }
  let cur = img;
  if (needH) {
    const first = vert.bounds[0];
    const last = vert.bounds[outH * 2 - 2] + vert.bounds[outH * 2 - 1];
    for (let i = 0; i < outH; i++) vert.bounds[i * 2] -= first;
    cur = resizeHorizontal(img, outW, first, last - first);
  }
  if (needV) cur = resizeVertical(cur, outH, vert);
  return cur;
}

// Python's round(): halves go to the even neighbour.
function pyRound(x) {
  const f = Math.floor(x), d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

function crop(img, left, top, w, h) {
  const c = img.channels;
  const out = new Uint8Array(w * h * c);
  for (let y = 0; y < h; y++) {
    const src = ((y + top) * img.width + left) * c;
    out.set(img.pixels.subarray(src, src + w * c), y * w * c);
  }
  return { width: w, height: h, channels: c, pixels: out };
}

// shoal.data.imageops.resize for the squash and crop modes.
function resizeMode(img, width, height, mode) {
  if (mode === "squash" || (img.width === width && img.height === height)) return resize(img, width, height);
  if (mode !== "crop") {
    throw new Error(`resize mode '${mode}' is not implemented in this example (squash and crop are); ` +
      "use the Python runtime, or retrain with --resize-mode squash");
  }
  const wr = img.width / width, hr = img.height / height;
  let rw, rh;
  if (wr > hr) { rw = Math.max(width, pyRound(img.width / hr)); rh = height; }
  else { rw = width; rh = Math.max(height, pyRound(img.height / wr)); }
  const resized = resize(img, rw, rh);
  return crop(resized, Math.trunc(pyRound((rw - width) / 2.0)), Math.trunc(pyRound((rh - height) / 2.0)), width, height);
}

// The whole preprocessing: image file -> float32 NCHW network input.
async function networkInput(file, input) {
  const [dw, dh] = input.dataset_size || input.size;
  const [w, h] = input.size;
  const decoded = await decode(file, [dw, dh]);
  let img = resizeMode(toChannels(decoded, input.channels), dw, dh, input.resize_mode || "squash");
  if (input.crop) img = crop(img, Math.floor((dw - w) / 2), Math.floor((dh - h) / 2), w, h);
  const c = img.channels;
  const data = new Float32Array(c * h * w);
  for (let ch = 0; ch < c; ch++) {
    for (let i = 0; i < h * w; i++) data[ch * h * w + i] = img.pixels[i * c + ch];
  }
  return new ort.Tensor("float32", data, [1, c, h, w]);
}

// -- the model ----------------------------------------------------------------------------------
// A bundle's graph outputs "probabilities" and, from format 2 on, "unfamiliar_score" (the cosine
// distance to the k-th nearest training image) and "unfamiliar" (that score above the manifest's
// unfamiliar.threshold). Without them the verdict is null and `reason` says why, as in Python.
class Classifier {
  static async load(bundleDir) {
    const manifest = readManifest(bundleDir);
    const session = await ort.InferenceSession.create(path.join(bundleDir, "model.onnx"), {
      graphOptimizationLevel: "all",
      executionMode: "sequential",
    });
    return new Classifier(bundleDir, manifest, session);
  }

  constructor(bundleDir, manifest, session) {
    this.manifest = manifest;
    this.session = session;
    const onnx = manifest.onnx || {};
    this.inputName = onnx.input || session.inputNames[0];
    this.outputName = (onnx.outputs && onnx.outputs[0]) || onnx.output || session.outputNames[0];
    const section = manifest.unfamiliar;
    this.reason = null;
    if (section && typeof section === "object" && "threshold" in section) {
      for (const name of ["unfamiliar_score", "unfamiliar"]) {
        if (!session.outputNames.includes(name)) {
          throw new Error(`bundle ${bundleDir} names an unfamiliar threshold but its graph has no '${name}' output; ` +
            "re-export it (shoal export MODEL --out ...)");
        }
      }
    } else {
      this.reason = "the model cannot tell: " +
        (section && typeof section === "object" && "reason" in section ? String(section.reason) : NO_VERDICT);
    }
  }

  // {source, predictions: [{label, probability}] (best first, `top` of them), unfamiliar,
  //  unfamiliar_score, unfamiliar_reason (only when unfamiliar is null)}: Result.to_dict() in Python.
  async predict(file, top = Infinity) {
    const output = await this.session.run({ [this.inputName]: await networkInput(file, this.manifest.input) });
    const predictions = Array.from(output[this.outputName].data)
      .map((p, i) => ({ label: this.manifest.labels[i], probability: p }))
      .sort((a, b) => b.probability - a.probability)
      .slice(0, top);
    const result = { source: file, predictions };
    if (this.reason === null) {
      result.unfamiliar = Boolean(output.unfamiliar.data[0]);
      result.unfamiliar_score = output.unfamiliar_score.data[0];
    } else {
      result.unfamiliar = null;
      result.unfamiliar_score = null;
      result.unfamiliar_reason = this.reason;
    }
    return result;
  }
}

// `shoal classify`'s line: `photo.jpg  dolphin 97.12%  seahorse 2.88%`, then UNFAMILIAR when so.
function formatLine(result) {
  // as shoal's _percent: anything that would print as 0.00% (a true zero too) is <0.01%, one form for all
  const percent = (p) => (p * 100 < 0.005 ? "<0.01%" : `${(p * 100).toFixed(2)}%`);
  const parts = [result.source, ...result.predictions.map((r) => `${r.label} ${percent(r.probability)}`)];
  if (result.unfamiliar) parts.push(UNFAMILIAR);
  return parts.join("  ");
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const [bundleDir, ...images] = args.positional;
  const classifier = await Classifier.load(bundleDir);
  if (classifier.reason !== null && !args.json) {
    console.error(`No unfamiliar verdict: ${classifier.reason.replace(/^the model cannot tell: /, "")}`);
  }
  const collected = [];
  let failed = 0;
  for (const image of images) {
    let result;
    try {
      result = await classifier.predict(image, args.top);
    } catch (err) {
      failed += 1;
      if (args.json) collected.push({ source: image, predictions: [], error: err.message });
      else console.error(`Error: ${err.message}`);
      continue;
    }
    if (args.json) collected.push(result);
    else console.log(formatLine(result));
  }
  if (args.json) console.log(JSON.stringify(collected));
  process.exitCode = failed ? 1 : 0;
}

module.exports = { Classifier, decode, draftScale, toChannels, resize, resizeMode, networkInput, formatLine };

if (require.main === module) {
  main().catch((err) => {
    console.error(`Error: ${err.message}`);
    process.exit(1);
  });
}
