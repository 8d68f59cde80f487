"""`pdbench --plugin file.py run --toys NAME` runs a toy model that only the plugin file registers."""

from __future__ import annotations

import json
import textwrap

from benchmark.cli import main

PLUGIN = textwrap.dedent(
    """
    import torch
    from torch import nn

    from benchmark.registry import TOY_MODELS
    from benchmark.toy import LinearSite, Mechanism, ToyModel, ToyModelSpec


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.W = nn.Parameter(torch.zeros(1, 2))

        def forward(self, x):
            return x @ self.W.T


    class TwoWeights(ToyModel):
        def __init__(self, seed=0):
            super().__init__()
            self.spec = ToyModelSpec("plugin_two_weights", 0, "1", seed, "exact", "y = W x", "test", ("W",))

        def make_model(self):
            return Net()

        def fit(self, model, seed):
            with torch.no_grad():
                model.W.copy_(torch.tensor([[2.0, 3.0]]))
            return {}

        def sample(self, n, generator):
            return (torch.rand(n, 2, generator=generator) < 0.5).float()

        def mechanisms(self, model):
            eye = torch.eye(2)
            return [
                Mechanism(f"m{i}", {"W": eye[i][None].bool()}, components={"W": model.W.detach() * eye[i]})
                for i in range(2)
            ]

        def active(self, inputs):
            return inputs != 0

        def sites(self, model, inputs):
            return [LinearSite("W", inputs)]


    TOY_MODELS.register("plugin_two_weights", TwoWeights)
    """
)


def test_run_accepts_a_toy_that_only_a_plugin_registers(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PDBENCH_CACHE", str(tmp_path / "cache"))
    plugin = tmp_path / "toy_plugin.py"
    plugin.write_text(PLUGIN)
    results = tmp_path / "results"
    argv = ["--plugin", str(plugin), "run", "--toys", "plugin_two_weights", "--methods", "oracle", "--seeds", "0"]
    assert main([*argv, "--results", str(results), "--jobs", "1", "--no-leaderboard"]) == 0
    stored = json.loads((results / "plugin_two_weights" / "oracle" / "seed0.json").read_text())
    assert stored["status"] == "ok" and stored["metrics"]["hungarian"] == 1.0
