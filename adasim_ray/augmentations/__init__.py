"""DINO's two global views, t and t' of the paper (Section 3.3, Fig. 2), for any data set.

AdaSim trains on pairs (t(x_i), t'(x_j*)): view 1 (``which=0``) of the anchor image and
view 2 (``which=1``) of its partner. The two views are DINO's global crops (Caron et al.,
2021, Appendix "Data augmentation"; BYOL's asymmetric pair):

==============================  ===============  ===============  ======================
operation                       view 1 (t)       view 2 (t')      grey (C = 1) images
==============================  ===============  ===============  ======================
RandomResizedCrop, bicubic      scale (0.25, 1)  scale (0.25, 1)  same
horizontal flip                 p = 0.5          p = 0.5          same; off for digits
colour jitter 0.4/0.4/0.2/0.1   p = 0.8          p = 0.8          brightness + contrast
grayscale                       p = 0.2          p = 0.2          dropped (a no-op)
Gaussian blur                   p = 1.0          p = 0.1          same, smaller sigma
solarise (threshold 128)        p = 0            p = 0.2          same
normalise (per-channel mean/std)
==============================  ===============  ===============  ======================

The crop scale (0.25, 1) is the paper's (Section 5, "Limitations"; DINO's code uses 0.4).
Adaptations, each a constructor argument:

* Grey images keep brightness and contrast jitter; saturation, hue and grayscale do
  nothing to a single channel, so they are left out rather than silently skipped.
* Blur: DINO draws sigma in (0.1, 2.0) px at 224 px. A 28 px digit has strokes about two
  pixels wide, so the largest sigma shrinks with the image, ``min(2, size / 28)`` (1 px at
  28, 2 px from 56 px up): strong enough to matter, never erasing a stroke.
* Flip: a mirrored digit is another symbol (or none), so ``for_source`` turns the flip off
  for a source that is not ``mirror_invariant`` (``mnist`` and ``digits``); natural images
  keep DINO's flip.

Randomness: a view is a function of its row of uniform numbers (``views.VIEW_DRAWS`` of
them, drawn whatever is applied). ``GlobalViews.pair_views`` takes them from a numpy
generator (the fetch seeds one per batch from (seed, epoch, position): the same run gives
the same views); ``views`` draws one seed from a ``torch.Generator``, or from torch's
global generator without one, so ``torch.manual_seed(s)`` makes a sequence of calls
reproducible.

Where the work happens (the fetch makes both views of every pair, on the CPU, and the GPUs
wait on it): the crop is placed from the image header before decoding, so a JPEG decodes
at reduced scale when the crop allows (:mod:`.geometry`); crop and resize run on uint8
with torch's antialiased bicubic kernels; jitter and grayscale are one lookup table per
view and the blur a separable Gaussian (:mod:`.photometric`, which states the
approximations and their bounds); views leave the fetch as uint8 and are normalised on the
Train worker's device (``GlobalViews.normalize``). ``benchmarks/pipeline.py`` measures the
result against the PIL loader the paper's authors use.

Examples:
    >>> views = GlobalViews(size=28, channels=1, mean=(0.1307,), std=(0.3081,), flip=False)
    >>> image = np.zeros((28, 28, 1), dtype=np.uint8)
    >>> views.view(image, 0).shape
    torch.Size([1, 28, 28])
    >>> views.views([image, image], 1, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([2, 1, 28, 28])
"""

from __future__ import annotations

from adasim_ray.augmentations.views import VIEW_DRAWS, GlobalViews

__all__ = ["VIEW_DRAWS", "GlobalViews"]
