"""The fast demo variant: TTRL with no labels raises pass@1 on the synthetic test set."""

import json

from experiments import demo


def test_fast_demo_ttrl_raises_pass_at_1(tmp_path):
    result = demo.run_demo("ci", str(tmp_path), seed=0, labels_baseline=False)
    base, ttrl = result["base"], result["ttrl_last"]
    assert ttrl["pass@1"] > base["pass@1"], result["table"]
    # the outputs a user looks at were written
    assert (tmp_path / "ttrl_demo.png").stat().st_size > 1000
    assert json.loads((tmp_path / "demo_result.json").read_text())["base"] == base
    assert any((tmp_path / "ttrl" / "tensorboard").iterdir())
    assert any(p.name.isdigit() for p in (tmp_path / "ttrl" / "checkpoints").iterdir())
