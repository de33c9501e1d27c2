"""The window of Section 3.3.3: each image's top-K neighbours over the last w epochs.

Eq. 8 averages the similarity over the last w epochs; Section 3.4 keeps only each epoch's top-K
support S^(e) of an image, so the window is a ring buffer of shape (N, w, K) with int32 ids and
fp16 (or fp32) similarities, never an N x N object. At ImageNet scale (N = 1,281,167, w = 50,
K = 10) that is 3.8 GB with int32 + fp16, held once and sharded like the cache. It lives in the
host memory of its shard by design (its buffers say ``device="cpu"``), also when the cache
rows are on a GPU: the epoch plan that reads it sorts with numpy (``partners.py``).

Epoch life cycle: :meth:`record` fills the slot of the running epoch; :meth:`end_epoch` closes
it (the partner plan of the next epoch is then computed from the closed slots); the next
:meth:`record` reuses the oldest slot, which is cleared first.

Images not seen in an epoch (dropped by ``drop_last``, or a partial epoch) keep an empty slot for
that epoch: they contribute nothing to Eq. 11 for that epoch, exactly as if their support had
been empty, and the score is still divided by w (an image missing epochs scores lower, so it is
bootstrapped less: the conservative choice).
"""

from __future__ import annotations

import torch

from adasim_ray.engine.ordering import INVALID_ID

SIM_DTYPES = {"float32": torch.float32, "float16": torch.float16}


class NeighbourWindow:
    """Top-K (id, similarity) of images ``[start, stop)`` for the last ``window`` epochs.

    Args:
        start: first global image id owned.
        stop: one past the last owned id.
        window: w, the number of epochs remembered (Eq. 8).
        topk: K, the support size per epoch (Section 3.4).
        sim_dtype: ``"float16"`` (default, half the memory) or ``"float32"``.

    Examples:
        >>> win = NeighbourWindow(0, 3, window=2, topk=2)
        >>> win.record(torch.tensor([0]), torch.tensor([[0, 2]]), torch.tensor([[0.9, 0.5]]))
        >>> win.end_epoch()
        >>> win.epochs_closed, win.ids[0, 0].tolist()
        (1, [0, 2])
    """

    def __init__(
        self, start: int, stop: int, window: int, topk: int, sim_dtype: str = "float16"
    ) -> None:
        if window < 1:
            raise ValueError(f"window (w) must be >= 1, got {window}")
        if topk < 1:
            raise ValueError(f"topk (K) must be >= 1, got {topk}")
        if stop <= start or start < 0:
            raise ValueError(f"window shard range [{start}, {stop}) must be non-empty and >= 0")
        if sim_dtype not in SIM_DTYPES:
            raise ValueError(f"sim_dtype must be one of {sorted(SIM_DTYPES)}, got {sim_dtype!r}")
        self.start, self.stop = start, stop
        self.window, self.topk = window, topk
        self.sim_dtype_name = sim_dtype
        n = stop - start
        self.ids = torch.full((n, window, topk), INVALID_ID, dtype=torch.int32, device="cpu")
        self.sims = torch.zeros((n, window, topk), dtype=SIM_DTYPES[sim_dtype], device="cpu")
        self.seen = torch.zeros((n, window), dtype=torch.bool, device="cpu")
        self.epochs_closed = 0
        self._slot_open = True  # slot 0 starts empty

    @property
    def size(self) -> int:
        return self.stop - self.start

    @property
    def current_slot(self) -> int:
        """Ring slot that the running epoch writes."""
        return self.epochs_closed % self.window

    @property
    def epochs_in_window(self) -> int:
        """How many closed epochs the window holds: min(epochs closed, w)."""
        return min(self.epochs_closed, self.window)

    def closed_slots(self) -> list[int]:
        """Ring slots of the closed epochs in the window, oldest first."""
        n = self.epochs_in_window
        return [(self.epochs_closed - n + t) % self.window for t in range(n)]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.ids, self.sims, self.seen))

    def _open_slot(self) -> None:
        slot = self.current_slot
        self.ids[:, slot] = INVALID_ID
        self.sims[:, slot] = 0
        self.seen[:, slot] = False
        self._slot_open = True

    def record(
        self, image_ids: torch.Tensor, nbr_ids: torch.Tensor, nbr_sims: torch.Tensor
    ) -> None:
        """Store the running epoch's top-K of the given (owned) images.

        Args:
            image_ids: (B,) global ids, all inside ``[start, stop)``, no repeats.
            nbr_ids: (B, K) global neighbour ids (``-1`` = empty).
            nbr_sims: (B, K) their similarities (``-inf`` in empty slots is stored as 0).
        """
        if not self._slot_open:
            self._open_slot()
        image_ids = image_ids.to(torch.int64)
        if nbr_ids.shape != (image_ids.shape[0], self.topk) or nbr_sims.shape != nbr_ids.shape:
            raise ValueError(
                f"topk: expected (B, {self.topk}) neighbours for B={image_ids.shape[0]}, "
                f"got ids {tuple(nbr_ids.shape)} and sims {tuple(nbr_sims.shape)}"
            )
        if ((image_ids < self.start) | (image_ids >= self.stop)).any():
            raise ValueError(
                f"ids out of range: this window shard owns [{self.start}, {self.stop})"
            )
        if torch.unique(image_ids).numel() != image_ids.numel():
            raise ValueError("ids: the same image recorded twice in one call")
        local = image_ids - self.start
        slot = self.current_slot
        empty = nbr_ids < 0
        self.ids[local, slot] = nbr_ids.to(torch.int32).masked_fill(empty, INVALID_ID)
        self.sims[local, slot] = nbr_sims.float().masked_fill(empty, 0.0).to(self.sims.dtype)
        self.seen[local, slot] = True

    def end_epoch(self) -> None:
        """Close the running epoch's slot; the next :meth:`record` starts a new one."""
        if not self._slot_open:
            self._open_slot()  # an epoch in which this shard saw nothing still counts
        self.epochs_closed += 1
        self._slot_open = False

    def rows(self, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Closed-epoch entries of local rows [lo, hi) as (ids (n, e*K) int64, sims (n, e*K) fp32),
        oldest epoch first; empty or unseen entries have id -1."""
        return self.rows_at(slice(lo, hi))

    def rows_at(self, local: slice | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`rows` of any local rows: a slice, or an index tensor (rows in its order)."""
        slots = self.closed_slots()
        ids = self.ids[local][:, slots].to(torch.int64)
        sims = self.sims[local][:, slots].float()
        unseen = ~self.seen[local][:, slots]
        ids = ids.masked_fill(unseen.unsqueeze(-1), INVALID_ID)
        n = ids.shape[0]
        return ids.reshape(n, -1), sims.reshape(n, -1)

    def latest_rows(self, lo: int, hi: int) -> torch.Tensor:
        """Top-K ids of the most recent closed epoch for local rows [lo, hi) ((n, K) int64)."""
        if self.epochs_closed == 0:
            return torch.full((hi - lo, self.topk), INVALID_ID, dtype=torch.int64, device="cpu")
        slot = (self.epochs_closed - 1) % self.window
        ids = self.ids[lo:hi, slot].to(torch.int64)
        return ids.masked_fill(~self.seen[lo:hi, slot].unsqueeze(-1), INVALID_ID)

    def state_dict(self) -> dict[str, object]:
        return {
            "start": self.start,
            "stop": self.stop,
            "window": self.window,
            "topk": self.topk,
            "sim_dtype": self.sim_dtype_name,
            "ids": self.ids,
            "sims": self.sims,
            "seen": self.seen,
            "epochs_closed": self.epochs_closed,
            "slot_open": self._slot_open,
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        expect = (self.start, self.stop, self.window, self.topk, self.sim_dtype_name)
        got = (state["start"], state["stop"], state["window"], state["topk"], state["sim_dtype"])
        if got != expect:
            raise ValueError(
                f"window state for (start, stop, w, K, dtype)={got}, expected {expect}"
            )
        self.ids.copy_(state["ids"])  # type: ignore[arg-type]
        self.sims.copy_(state["sims"])  # type: ignore[arg-type]
        self.seen.copy_(state["seen"])  # type: ignore[arg-type]
        self.epochs_closed = int(state["epochs_closed"])  # type: ignore[arg-type]
        self._slot_open = bool(state["slot_open"])
