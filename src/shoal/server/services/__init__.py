"""The service layer between routes and the library: each function is one action of the app.

Routes parse the request, call one function here, and format what it returns. These
functions call :mod:`shoal.datasets`, :mod:`shoal.training`, :mod:`shoal.models`,
:mod:`shoal.bundle` and :mod:`shoal.inference`; they hold no training or inference logic,
only the web app's bookkeeping (jobs, caches, uploads). Library errors
(:class:`~shoal.errors.ShoalError`) pass through; the app turns them into answers.

One module per area, as the routers are: :mod:`.datasets`, :mod:`.models`,
:mod:`.downloads`, :mod:`.predict`, :mod:`.assets`, :mod:`.folders`, :mod:`.jobs`, and
:mod:`.caches` for what is kept on ``app.state``. The names below are what the routes call.
"""

from shoal.server.services.assets import save_network_file, save_pretrained, upload_dir
from shoal.server.services.caches import Classifiers, NetworkCatalog
from shoal.server.services.datasets import (
    dataset_image,
    dataset_image_png,
    dataset_images,
    dataset_mean_path,
    dataset_source_png,
    dataset_view,
    delete_dataset,
    list_datasets,
    submit_dataset,
    submit_dataset_zip,
)
from shoal.server.services.downloads import bundle_path, download_file
from shoal.server.services.folders import clone_source, list_folders
from shoal.server.services.jobs import abort_job, job_view, list_jobs
from shoal.server.services.layers import layers_view
from shoal.server.services.models import (
    abort_model,
    delete_model,
    list_models,
    model_events,
    model_view,
    resume_model,
    submit_models,
)
from shoal.server.services.predict import classify, classify_list, classify_many, evaluation, heatmap_png

__all__ = [
    "Classifiers", "NetworkCatalog", "abort_job", "abort_model", "bundle_path", "classify", "classify_list",
    "classify_many", "clone_source", "dataset_image", "dataset_image_png", "dataset_images", "dataset_mean_path",
    "dataset_source_png", "dataset_view", "delete_dataset", "delete_model", "download_file", "evaluation",
    "heatmap_png", "job_view", "layers_view", "list_datasets", "list_folders", "list_jobs", "list_models",
    "model_events", "model_view", "resume_model", "save_network_file", "save_pretrained", "submit_dataset",
    "submit_dataset_zip", "submit_models", "upload_dir",
]
