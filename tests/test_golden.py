"""Every trainable recipe's first smoke-run losses equal the committed golden trace."""

import math

import pytest

from zoo import golden

CASES = golden.recipes_with_traces()


@pytest.mark.parametrize(("task", "recipe"), CASES, ids=[f"{t}-{r}" for t, r in CASES])
def test_golden_loss_trace(task, recipe):
    losses = golden.trace(task, recipe)
    path = golden.golden_path(task, recipe)
    if losses is None:
        assert not path.exists(), f"{path} exists but {recipe} trains nothing"
        return
    assert path.exists(), f"no golden trace for {task}/{recipe}: run `python -m zoo.golden --update`"
    expected = [float(v) for v in path.read_text().split()]
    assert len(losses) == len(expected) == golden.STEPS
    for step, (got, want) in enumerate(zip(losses, expected)):
        assert math.isclose(got, want, rel_tol=golden.RTOL), f"step {step}: {got:.8e} != golden {want:.8e}"
