"""Dependencies the routes declare, as ``Annotated`` aliases.

``SettingsDep`` comes from :func:`~shoal.server.config.get_settings` (tests override it with
``app.dependency_overrides``); the store is built from the settings per request (it is only
a folder path); the runner, classifier cache and templates live on ``app.state``, made by
:func:`~shoal.server.app.create_app` — nothing is created at import time.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates

from shoal.server.config import Settings, get_settings
from shoal.server.jobs import Runner
from shoal.server.services import Classifiers, NetworkCatalog
from shoal.store import Store

SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_store(settings: SettingsDep) -> Store:
    return Store(settings.home)


StoreDep = Annotated[Store, Depends(get_store)]


def get_runner(request: Request) -> Runner:
    return request.app.state.runner


RunnerDep = Annotated[Runner, Depends(get_runner)]


def get_classifiers(request: Request) -> Classifiers:
    return request.app.state.classifiers


ClassifiersDep = Annotated[Classifiers, Depends(get_classifiers)]


def get_catalog(request: Request) -> NetworkCatalog:
    return request.app.state.catalog


CatalogDep = Annotated[NetworkCatalog, Depends(get_catalog)]


def get_templates(request: Request) -> Jinja2Templates:
    return request.app.state.templates


TemplatesDep = Annotated[Jinja2Templates, Depends(get_templates)]
