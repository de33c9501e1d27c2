"""init_sources: a model started from an export, a run directory on S3 (its teacher or its
student, its data never opened), state dict files, and timm tags from the local cache only."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from adasim_ray.backbones import build_backbone
from adasim_ray.cli import main
from adasim_ray.config import dump_config, load_config
from adasim_ray.errors import ConfigError
from adasim_ray.export import load_backbone
from adasim_ray.init_sources import read_init
from adasim_ray.init_weights import InitSection, load_weights
from adasim_ray.preflight import preflight
from adasim_ray.recipe import build_model, make_views, open_train_source
from tests.saved_runs import DIGITS, eval_features, write_trained_run


class _RunsCode:
    """Unpickling this would run a command."""

    def __reduce__(self):
        import os

        return (os.system, ("true",))


def _one_line_error(section: InitSection) -> str:
    with pytest.raises(ConfigError) as err:
        read_init(section)
    message = str(err.value)
    assert message.startswith("init.backbone: ") and "\n" not in message
    return message


def test_a_model_started_from_an_export_has_its_backbone_as_student_and_teacher(tmp_path,
                                                                                capsys):
    run, _, _ = write_trained_run(tmp_path)
    out = tmp_path / "export"
    assert main(["export", str(run), "--output", str(out)]) == 0
    cfg = load_config(None, [*DIGITS, "seed=7", f"init.backbone={out}"])
    views = make_views(cfg, open_train_source(cfg))
    capsys.readouterr()
    model = build_model(cfg, views, 300, init=read_init(cfg.init))
    line = capsys.readouterr().out.strip()
    assert line == (f"[adasim] init: loaded {len(model.encoder('teacher').state_dict())} "
                    f"tensors from {out} (an export: cnn_tiny_cpu, teacher, run)")
    exported = eval_features(load_backbone(out), cfg)
    assert torch.equal(eval_features(model.encoder("teacher"), cfg), exported)
    assert torch.equal(eval_features(model.encoder("student"), cfg), exported)
    # the same config without init starts elsewhere
    assert not torch.equal(eval_features(build_model(cfg, views, 300).encoder("teacher"), cfg),
                           exported)


def test_a_run_directory_on_s3_gives_its_teacher_or_student(s3_server, tmp_path):
    run, model, cfg = write_trained_run(tmp_path)
    export = tmp_path / "export"
    assert main(["export", str(run), "--output", str(export)]) == 0
    # its data is never opened: the run's config names a data set that does not exist
    (run / "config.yaml").write_text(dump_config(cfg.replace(data="folder:/nowhere/at/all")))
    bucket = s3_server.bucket()
    s3_server.upload(run, f"{bucket}/runs/run")
    uri = s3_server.uri(f"{bucket}/runs/run")
    for which in ("teacher", "student"):
        weights = read_init(InitSection(uri, which=which))
        assert weights is not None
        assert weights.source == f"the {which} backbone of run {uri} (epoch 2, cnn_tiny_cpu)"
        expected = model.encoder(which).state_dict()
        assert list(weights.tensors) == list(expected)
        assert all(torch.equal(weights.tensors[k], v) for k, v in expected.items())
    assert not torch.equal(read_init(InitSection(uri)).tensors["0.weight"],
                           read_init(InitSection(uri, which="student")).tensors["0.weight"])
    # an export folder and a state dict file on S3 read the same as local ones
    s3_server.upload(export, f"{bucket}/export")
    weights = read_init(InitSection(s3_server.uri(f"{bucket}/export")))
    assert weights.source.startswith(f"{s3_server.uri(bucket + '/export')} (an export: ")
    assert all(torch.equal(weights.tensors[k], v)
               for k, v in model.encoder("teacher").state_dict().items())
    file = s3_server.uri(f"{bucket}/export/backbone.safetensors")
    assert read_init(InitSection(file)).tensors.keys() == weights.tensors.keys()
    empty = s3_server.uri(f"{bucket}/runs/empty")
    s3_server.filesystem().create_dir(f"{bucket}/runs/empty")
    s3_server.filesystem().open_output_stream(f"{bucket}/runs/empty/config.yaml").close()
    assert _one_line_error(InitSection(empty)) == (
        f"init.backbone: run {empty} has no complete checkpoint yet")


def test_a_method_with_one_backbone_gives_it_for_both_roles(tmp_path):
    """SimSiam's backbone sits at ``backbone.`` in its state dict, not ``teacher.backbone.``:
    found by building the run's own method (on the meta device)."""
    run, model, _ = write_trained_run(tmp_path, "method=simsiam")
    rng = torch.get_rng_state()
    for which in ("teacher", "student"):
        tensors = read_init(InitSection(str(run), which=which)).tensors
        expected = model.backbone.state_dict()
        assert list(tensors) == list(expected)
        assert all(torch.equal(tensors[k], v) for k, v in expected.items())
    assert torch.equal(torch.get_rng_state(), rng)  # reading a run leaves the RNG be


def test_state_dict_files(tmp_path):
    backbone, _ = build_backbone("cnn_tiny_cpu", image_size=8, in_chans=1)
    state = backbone.state_dict()
    torch.save(state, tmp_path / "b.pt")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "b.safetensors"))
    for name in ("b.pt", "b.safetensors"):
        weights = read_init(InitSection(str(tmp_path / name)))
        assert weights.source == str(tmp_path / name)
        assert all(torch.equal(weights.tensors[k], v) for k, v in state.items())
    torch.save({"model": state, "epoch": 3}, tmp_path / "checkpoint.pt")
    assert "is not a state dict of tensors (it holds ['model', 'epoch'])" in _one_line_error(
        InitSection(str(tmp_path / "checkpoint.pt")))
    torch.save({"w": _RunsCode()}, tmp_path / "code.pt")
    assert "refused to load" in _one_line_error(InitSection(str(tmp_path / "code.pt")))
    (tmp_path / "weights").write_bytes(b"\0")
    assert "unknown format" in _one_line_error(InitSection(str(tmp_path / "weights")))
    assert _one_line_error(InitSection(str(tmp_path / "nope.pt"))) == (
        f"init.backbone: {tmp_path / 'nope.pt'} not found")
    assert "neither an adasim-ray export folder" in _one_line_error(InitSection(str(tmp_path)))


def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face and torch hub cache, where the environment points."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "hf" / "hub"


TAG = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"


def test_a_timm_tag_missing_from_the_cache_is_one_pre_flight_line(tmp_path, monkeypatch):
    hub = _cache(tmp_path, monkeypatch)
    cfg = load_config(None, ["data=digits", "epochs=2", "dino.warmup_epochs=1",
                             "backbone=vit_tiny_patch16_224", "augment.image_size=32",
                             "init.backbone=timm:vit_tiny_patch16_224"])
    start = time.monotonic()
    alone = _one_line_error(cfg.init)
    assert time.monotonic() - start < 20  # no download tried, no timeout waited for
    [finding] = preflight(cfg).findings
    assert finding.message == alone
    assert finding.message.startswith(f"init.backbone: timm:{TAG} is not in the local cache")
    assert f"timm/{TAG} in the Hugging Face cache {hub}" in finding.message
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in finding.message
    assert f"timm.create_model('{TAG}', pretrained=True)" in finding.message
    assert "not a pretrained tag" in _one_line_error(InitSection("timm:no_such_model.x"))


def test_a_timm_tag_in_the_cache_starts_a_vit_at_another_size(tmp_path, monkeypatch):
    """The cache as ``timm.create_model(TAG, pretrained=True)`` fills it (a random ViT-Ti with
    its 1000-class head, not downloaded here): the head is dropped, the position embeddings
    resampled from 224 to 32 px, every other tensor loads as it is."""
    hub = _cache(tmp_path, monkeypatch)
    snapshot = hub / f"models--timm--{TAG}" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123abc")
    pretrained = timm.create_model("vit_tiny_patch16_224", pretrained=False).state_dict()
    save_file({k: v.contiguous() for k, v in pretrained.items()},
              str(snapshot / "model.safetensors"))
    weights = read_init(InitSection(f"timm:{TAG}"))
    assert weights.source == f"timm:{TAG}" and "head.weight" not in weights.tensors
    backbone, _ = build_backbone("vit_tiny_patch16_224", image_size=32, in_chans=3)
    found = load_weights(backbone, weights)
    assert found.complete and found.resampled == ["pos_embed"]
    assert backbone.pos_embed.shape == (1, 1 + 4, 192)
    mine = backbone.state_dict()
    assert all(torch.equal(mine[k], pretrained[k]) for k in mine if k != "pos_embed")


def test_the_pre_flight_checks_the_source_without_loading_it(tmp_path):
    run, _, _ = write_trained_run(tmp_path)
    out = tmp_path / "export"
    assert main(["export", str(run), "--output", str(out)]) == 0
    base = ["epochs=2", "dino.warmup_epochs=1", *DIGITS]
    assert preflight(load_config(None, [*base, f"init.backbone={out}"])).ok
    missing = preflight(load_config(None, [*base, f"init.backbone={tmp_path / 'gone'}"]))
    assert [f.message for f in missing.findings] == [
        f"init.backbone: {tmp_path / 'gone'} not found"]
    other = preflight(load_config(None, [*base, "backbone=resnet_tiny_cpu",
                                         f"init.backbone={out}"]))
    [finding] = other.findings
    assert finding.message.startswith(f"init.backbone: {out} (an export: cnn_tiny_cpu, "
                                      "teacher, run) does not match the backbone: ")
    loose = load_config(None, [*base, "backbone=resnet_tiny_cpu", f"init.backbone={out}",
                               "init.strict=false"])
    assert preflight(loose).ok
