"""``launch.py eval --device``: where the evaluation runs, a bad name in one line."""

from __future__ import annotations

import json

import pytest
import torch

from adasim_ray.cli import main


@pytest.mark.parametrize(("device", "words"), [
    ("gpu0", ["--device", "'gpu0' is not a device"]),
    pytest.param("cuda", ["--device", "no CUDA GPU"],
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here")),
])
def test_a_device_this_machine_lacks_is_one_line(device, words, capsys):
    code = main(["eval", "--raw-pixels", "--data", "digits", "--device", device])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert all(word in err[0] for word in words), err[0]


def test_eval_runs_on_the_named_device(capsys):
    code = main(["eval", "--raw-pixels", "--data", "digits", "--no-fewshot", "--no-linear",
                 "--device", "cpu", "--json"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and result["device"] == "cpu" and result["knn_top1"] > 0.9
