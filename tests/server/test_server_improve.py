"""The improvement loop's API: the refusals of /api/lr-find and of the Review page's actions, and a
queued range test (its job row) — no training here; the browser test runs the whole loop."""

from __future__ import annotations

from fastapi.testclient import TestClient

from shoal.server import Settings, create_app

LOCAL = "http://127.0.0.1"
CSRF = {"X-Shoal-CSRF": "1"}


def test_lr_find_queues_a_job_and_refuses_a_fitted_head(tiny_dataset, shoal_home, tmp_path):
    with TestClient(create_app(Settings(home=shoal_home, roots=(tmp_path,), run_jobs=False)), base_url=LOCAL) as c:
        fitted = c.post("/api/lr-find", json={"dataset": "tiny", "pretrained": True}, headers=CSRF)
        assert fitted.status_code == 400
        assert fitted.json()["detail"] == ("a fitted head has no learning rate to find (its strength is cross-validated); "
                                           "choose head sgd, or freeze none, to train with the loop")
        several = c.post("/api/lr-find", json={"dataset": "tiny", "options": {"batch_size": [8, 16]}}, headers=CSRF)
        assert several.status_code == 400 and "give one batch_size" in several.json()["detail"]
        queued = c.post("/api/lr-find", json={"dataset": "tiny", "network": "lenet", "options": {"lr": 0.1}},
                        headers=CSRF)
        assert queued.status_code == 202, queued.text
        job = queued.json()
        assert job["kind"] == "lr_find" and job["target"] == "tiny" and job["status"] == "queued"
        assert c.get("/api/datasets/nope").status_code == 404
        assert c.post("/api/lr-find", json={"dataset": "nope"}, headers=CSRF).status_code == 404


def test_review_actions_refuse_what_cannot_be_done(tiny_dataset, shoal_home, tmp_path):
    from shoal.training import TrainConfig, train

    train(TrainConfig(dataset="tiny", network="lenet", epochs=1, name="m"))
    with TestClient(create_app(Settings(home=shoal_home, roots=(tmp_path,), run_jobs=False)), base_url=LOCAL) as c:
        empty = c.post("/api/models/m/review/apply", json={}, headers=CSRF)
        assert empty.status_code == 400 and empty.json()["detail"].startswith("nothing to change")
        image = tiny_dataset.sources("train")[0]
        wrong = c.post("/api/models/m/review/apply", json={"relabel": {image: "hexagon"}}, headers=CSRF)
        assert wrong.status_code == 400 and "'hexagon' is not a class of dataset 'tiny'" in wrong.json()["detail"]
        made = c.post("/api/models/m/review/apply", json={"exclude": [image]}, headers=CSRF)
        assert made.status_code == 201 and made.json()["dataset"] == "tiny@2" and made.json()["excluded"] == 1
        again = c.post("/api/models/m/retrain", json={"dataset": "tiny@2"}, headers=CSRF)
        assert again.status_code == 202 and again.json()["name"] == "tiny@2-lenet"
        twice = c.post("/api/models/m/retrain", json={"dataset": "tiny@2"}, headers=CSRF)
        assert twice.status_code == 409 and "already exists or is queued" in twice.json()["detail"]
        assert c.get("/models/m/review").status_code == 200
