"""ResumableSampler: epoch orders are pure functions of (seed, epoch); a resume mid-epoch yields
exactly the remaining indices, with a DataLoader with and without worker processes."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from taskpoint.integrations.torch import ResumableSampler  # noqa: E402

torch.set_num_threads(1)


def epochs(sampler: ResumableSampler, n: int) -> list[list[int]]:
    out = []
    for epoch in range(sampler.epoch, n):
        sampler.set_epoch(epoch)
        out.append(list(sampler))
    return out


def test_each_epoch_is_a_permutation_fixed_by_seed_and_epoch():
    a, b = ResumableSampler(50, seed=1), ResumableSampler(range(50), seed=1)
    orders = epochs(a, 3)
    assert orders == epochs(b, 3)
    assert all(sorted(o) == list(range(50)) for o in orders)
    assert orders[0] != orders[1]
    assert orders[0] != epochs(ResumableSampler(50, seed=2), 1)[0]
    assert a.order(1) == orders[1]
    assert list(ResumableSampler(5, shuffle=False)) == [0, 1, 2, 3, 4]


def test_epochs_advance_without_set_epoch():
    sampler = ResumableSampler(20, seed=4)
    first, second = list(sampler), list(sampler)
    assert (first, second) == (sampler.order(0), sampler.order(1))
    assert sampler.state_dict()["epoch"] == 2


@pytest.mark.parametrize("stop", [0, 1, 13, 29, 30])
def test_resume_mid_epoch_yields_exactly_the_rest_then_identical_epochs(stop):
    reference = epochs(ResumableSampler(30, seed=9), 3)
    sampler = ResumableSampler(30, seed=9)
    sampler.set_epoch(1)
    it = iter(sampler)
    seen = [next(it) for _ in range(stop)]
    state = sampler.state_dict()
    assert state["epoch"] == 1 and state["position"] == stop

    resumed = ResumableSampler(30, seed=9)
    resumed.load_state_dict(state)
    rest = epochs(resumed, 3)
    assert seen + rest[0] == reference[1]
    assert rest[1:] == reference[2:]


def test_changing_the_epoch_does_not_disturb_an_open_iterator():
    sampler = ResumableSampler(10, seed=0)
    it = iter(sampler)
    head = [next(it) for _ in range(3)]
    sampler.set_epoch(5)
    assert head + list(it) == sampler.order(0)
    assert sampler.state_dict()["epoch"] == 5 and sampler.position == 0


def test_state_from_another_dataset_or_seed_is_refused():
    state = ResumableSampler(10, seed=0).state_dict()
    with pytest.raises(ValueError, match="num_samples, seed, shuffle"):
        ResumableSampler(11, seed=0).load_state_dict(state)
    with pytest.raises(ValueError, match="num_samples, seed, shuffle"):
        ResumableSampler(10, seed=1).load_state_dict(state)


class Indices(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 103

    def __getitem__(self, i: int) -> int:
        return i


def batches_of(loader) -> list[list[int]]:
    return [b.tolist() for b in loader]


@pytest.mark.parametrize("drop_last", [False, True])
def test_dataloader_without_workers_position_counts_trained_batches(drop_last):
    data = Indices()

    def loader(sampler):
        return torch.utils.data.DataLoader(
            data, batch_size=8, sampler=sampler, drop_last=drop_last, generator=torch.Generator()
        )

    reference = []
    ref_sampler = ResumableSampler(data, seed=3)
    for epoch in range(2):
        ref_sampler.set_epoch(epoch)
        reference += batches_of(loader(ref_sampler))

    for stop in (0, 5, 12, len(reference) // 2):
        sampler = ResumableSampler(data, seed=3)
        trained, state = [], None
        for epoch in range(2):
            sampler.set_epoch(epoch)
            for batch in loader(sampler):
                trained.append(batch.tolist())
                if len(trained) == stop:
                    state = sampler.state_dict()  # saved right after training this batch
                    break
            if state is not None:
                break
        if state is None:
            continue
        resumed = ResumableSampler(data, seed=3)
        resumed.load_state_dict(state)
        for epoch in range(resumed.epoch, 2):
            resumed.set_epoch(epoch)
            trained += batches_of(loader(resumed))
        assert trained == reference, f"stop={stop}"


def test_dataloader_with_workers_needs_manual_advance():
    """Workers prefetch: a yield-counting sampler runs ahead of training, so with num_workers>0
    the loop advances the sampler itself (``auto_advance=False``) and the resume is exact."""
    data = Indices()

    def loader(sampler):
        return torch.utils.data.DataLoader(
            data,
            batch_size=8,
            sampler=sampler,
            num_workers=2,
            prefetch_factor=2,
            generator=torch.Generator(),
            multiprocessing_context="fork",
        )

    ahead = ResumableSampler(data, seed=5)
    it = iter(loader(ahead))
    next(it)
    assert ahead.position > 8  # one batch trained, more already handed to the workers
    del it

    reference = batches_of(loader(ResumableSampler(data, seed=5, auto_advance=False)))
    sampler = ResumableSampler(data, seed=5, auto_advance=False)
    sampler.set_epoch(0)
    trained = []
    for batch in loader(sampler):
        trained.append(batch.tolist())
        sampler.advance(len(batch))
        if len(trained) == 6:
            break
    state = sampler.state_dict()
    assert state["position"] == 48

    resumed = ResumableSampler(data, seed=5, auto_advance=False)
    resumed.load_state_dict(state)
    resumed.set_epoch(0)
    trained += batches_of(loader(resumed))
    assert trained == reference

    with pytest.raises(RuntimeError, match="auto_advance=False"):
        ResumableSampler(data).advance(1)
    with pytest.raises(ValueError, match="cannot advance"):
        resumed.advance(1000)


def test_a_sampler_pickles_under_its_public_module():
    """Pickled, it names the public module, which stays when private modules move."""
    import pickle

    sampler = ResumableSampler(10, seed=3)
    data = pickle.dumps(sampler, protocol=5)
    assert b"taskpoint.integrations.torch\x94" in data and b"_sampler" not in data
    assert list(pickle.loads(data)) == list(sampler)
