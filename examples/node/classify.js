#!/usr/bin/env node
// Classify an image with a shoal model bundle from Node.js, through onnxruntime-node.
//
//   npm install --ignore-scripts        # once, in this folder
//   node classify.js BUNDLE_DIR IMAGE [--top N] [--json]
//
// BUNDLE_DIR is an unzipped bundle (a folder with shoal.json and model.onnx; unzip a
// .shoal file to get one). IMAGE is a JPEG or PNG file. The preprocessing repeats what
// shoal does in Python (shoal.data.imageops.prepare, then the centre crop):
//   - decode to RGB (alpha composited on white) or grayscale, as the manifest says;
//   - resize to input.dataset_size with Pillow's bilinear filter (antialiased when
//     shrinking), re-implemented below bit for bit, for the "squash" and "crop" resize modes;
//   - centre-crop to input.size when input.crop is set;
//   - float32 NCHW pixels 0..255 (the normalisation is inside the ONNX graph).
// Not repeated here: EXIF orientation and the reduced-scale decoding Python uses for JPEGs
// four or more times larger than the dataset size; for such photos the probabilities can
// differ slightly from Python's.
"use strict";

const fs = require("fs");
const path = require("path");
const ort = require("onnxruntime-node");
const jpeg = require("jpeg-js");
const { PNG } = require("pngjs");

const PRECISION_BITS = 32 - 8 - 2; // Pillow's fixed-point precision for 8-bit resampling

function usage(message) {
  if (message) console.error(`Error: ${message}`);
  console.error("usage: node classify.js BUNDLE_DIR IMAGE [--top N] [--json]");
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
  if (args.positional.length !== 2) usage("give a bundle folder and one image");
  return args;
}

function readManifest(bundleDir) {
  const file = path.join(bundleDir, "shoal.json");
  if (!fs.existsSync(file)) {
    throw new Error(`${bundleDir} is not a bundle folder (no shoal.json); unzip a .shoal file first`);
  }
  const manifest = JSON.parse(fs.readFileSync(file, "utf8"));
  if (!Number.isInteger(manifest.format) || manifest.format > 1) {
    throw new Error(`bundle format ${manifest.format} is newer than this example reads (1)`);
  }
  return manifest;
}

// -- decoding: RGBA bytes, then RGB on white or grayscale, as Pillow converts -------------------
function decode(file) {
  const data = fs.readFileSync(file);
  if (data.length === 0) throw new Error(`cannot read image ${file}: empty file (0 bytes)`);
  if (data[0] === 0xff && data[1] === 0xd8) {
    const img = jpeg.decode(data, { useTArray: true, formatAsRGBA: true, maxMemoryUsageInMB: 1024 });
    return { width: img.width, height: img.height, rgba: img.data, alpha: false };
  }
  if (data.slice(1, 4).toString("latin1") === "PNG") {
    const img = PNG.sync.read(data);
    return { width: img.width, height: img.height, rgba: img.data, alpha: img.alpha };
  }
  throw new Error(`cannot read image ${file}: this example reads JPEG and PNG files only`);
}

function div255(v) {
  const tmp = v + 128;
  return ((tmp >> 8) + tmp) >> 8;
}

// Pillow: alpha composited on a white background (Image.paste with the alpha as mask),
// then RGB -> L as ((R*19595 + G*38470 + B*7471 + 0x8000) >> 16) for grayscale models.
function toChannels(image, channels) {
  const n = image.width * image.height;
  const out = new Uint8Array(n * channels);
  for (let i = 0; i < n; i++) {
    let r = image.rgba[i * 4], g = image.rgba[i * 4 + 1], b = image.rgba[i * 4 + 2];
    if (image.alpha) {
      const a = image.rgba[i * 4 + 3];
      r = div255(255 * (255 - a) + r * a);
      g = div255(255 * (255 - a) + g * a);
      b = div255(255 * (255 - a) + b * a);
    }
    if (channels === 3) {
      out[i * 3] = r; out[i * 3 + 1] = g; out[i * 3 + 2] = b;
    } else {
      out[i] = (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16;
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

// Image.resize((w, h), BILINEAR): horizontal pass over the rows the vertical pass needs, then vertical.
function resize(img, outW, outH) {
  if (img.width === outW && img.height === outH) return img;
  const vert = coefficients(img.height, outH);
  const needH = outW !== img.width, needV = outH !== img.height;
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
function networkInput(file, input) {
  const [dw, dh] = input.dataset_size || input.size;
  const [w, h] = input.size;
  let img = resizeMode(toChannels(decode(file), input.channels), dw, dh, input.resize_mode || "squash");
  if (input.crop) img = crop(img, Math.floor((dw - w) / 2), Math.floor((dh - h) / 2), w, h);
  const c = img.channels;
  const data = new Float32Array(c * h * w);
  for (let ch = 0; ch < c; ch++) {
    for (let i = 0; i < h * w; i++) data[ch * h * w + i] = img.pixels[i * c + ch];
  }
  return new ort.Tensor("float32", data, [1, c, h, w]);
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const [bundleDir, imageFile] = args.positional;
  const manifest = readManifest(bundleDir);
  const onnx = manifest.onnx || { input: "pixels", output: "probabilities" };
  const session = await ort.InferenceSession.create(path.join(bundleDir, "model.onnx"), {
    graphOptimizationLevel: "all",
    executionMode: "sequential",
  });
  const feeds = { [onnx.input]: networkInput(imageFile, manifest.input) };
  const output = await session.run(feeds);
  const probs = Array.from(output[onnx.output].data);
  const ranked = probs
    .map((p, i) => ({ label: manifest.labels[i], probability: p }))
    .sort((a, b) => b.probability - a.probability)
    .slice(0, args.top);
  if (args.json) {
    console.log(JSON.stringify({ source: imageFile, predictions: ranked }));
  } else {
    const percent = (p) => (p > 0 && p < 0.00005 ? "<0.01%" : `${(p * 100).toFixed(2)}%`);
    console.log([imageFile, ...ranked.map((r) => `${r.label} ${percent(r.probability)}`)].join("  "));
  }
}

module.exports = { decode, toChannels, resize, resizeMode, networkInput };

if (require.main === module) {
  main().catch((err) => {
    console.error(`Error: ${err.message}`);
    process.exit(1);
  });
}
