"""A `TorchCheckpointer` user gets the resume guard for free: its ``restore()`` goes through the
task checkpoint's loads, so the engine knows what was loaded, and ``require_resume=True``
refuses a retry that forgot to restore."""

from __future__ import annotations

import pytest

import taskpoint
from taskpoint import RecoverableError, current_context, task

torch = pytest.importorskip("torch")

from taskpoint.integrations.torch import TorchCheckpointer  # noqa: E402


def training(*, restores: bool):
    @task(retries=1, require_resume=True)
    def train(steps: int) -> int:
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        ckpt = TorchCheckpointer(model=model, optimizer=opt)
        start = (ckpt.restore() or 0) if restores else 0
        for step in range(start + 1, steps + 1):
            opt.zero_grad()
            model(torch.ones(1, 4)).sum().backward()
            opt.step()
            ckpt.save(step, blocking=True)
            if current_context().attempt == 1 and step == 3:
                raise RecoverableError("fails after step 3")
        return start

    return train


def test_a_restore_through_the_integration_counts_as_a_resume():
    execution = taskpoint.run(training(restores=True), steps=5)
    assert execution.status == "succeeded", execution.error
    assert execution.result == 3
    second = execution.nodes[0].attempts[1]
    assert (second.loaded_version, second.loaded_step) == ("0001-000003", 3)
    assert second.resume_warning is None


def test_a_retry_that_forgot_to_restore_is_refused():
    execution = taskpoint.run(training(restores=False), steps=5)
    assert execution.status == "failed"
    refused = execution.nodes[0].attempts[1]
    assert refused.error is not None and refused.error.startswith("NotResumedError")
    assert "0001-000003 (step 3) was available" in refused.error
    assert "tried to commit step 1" in refused.error
