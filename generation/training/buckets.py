"""Aspect-ratio buckets: train on portrait and landscape images without squashing them.

Each bucket is a size of about ``resolution²`` pixels, both sides multiples of 64, aspect
ratio at most 3:1 (the same idea as kohya's and NovelAI's buckets).  An image goes to the
bucket with the closest aspect ratio, is scaled to cover it and centre-cropped.  A batch
only holds images of one bucket (one tensor shape).

:class:`BucketSampler` decides the order: each epoch shuffles every bucket's images and
then the batches, from ``(seed, epoch)`` alone, so its whole state is two integers
(``epoch``, ``cursor``) — which is what makes a checkpoint resume at the very same batch.
No torch here.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from PIL import Image

BUCKET_STEP = 64
MAX_ASPECT = 3.0


def make_buckets(resolution: int, *, step: int = BUCKET_STEP, max_aspect: float = MAX_ASPECT
                 ) -> list[tuple[int, int]]:
    """The ``(width, height)`` buckets for ``resolution``, from the tallest to the widest."""
    area = resolution * resolution
    found = {(resolution, resolution)}
    for width in range(step, 2 * resolution + 1, step):
        height = (area // width) // step * step
        if height >= step and max(width, height) / min(width, height) <= max_aspect:
            found.add((width, height))
    return sorted(found, key=lambda wh: (wh[0] / wh[1], -wh[0] * wh[1]))


def nearest_bucket(width: int, height: int, buckets: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect ratio is closest to ``width:height`` (the larger one on a tie)."""
    aspect = math.log(width / height)
    return min(buckets, key=lambda wh: (abs(math.log(wh[0] / wh[1]) - aspect), -wh[0] * wh[1]))


def fit_to_bucket(image: Image.Image, bucket: tuple[int, int]) -> Image.Image:
    """Scale ``image`` to cover ``bucket`` (aspect kept), then crop the centre to exactly its size."""
    target_w, target_h = bucket
    scale = max(target_w / image.width, target_h / image.height)
    size = (max(target_w, round(image.width * scale)), max(target_h, round(image.height * scale)))
    resized = image.convert("RGB").resize(size, Image.Resampling.LANCZOS)
    left = (size[0] - target_w) // 2
    top = (size[1] - target_h) // 2
    return resized.crop((left, top, left + target_w, top + target_h))


class BucketSampler:
    """Batches of item indices, one bucket per batch, in a seeded order that resumes exactly."""

    def __init__(self, item_buckets: Sequence[tuple[int, int]], *, batch_size: int, seed: int,
                 epoch: int = 0, cursor: int = 0) -> None:
        self.batch_size = batch_size
        self.seed = seed
        self.groups: dict[tuple[int, int], list[int]] = {}
        for index, bucket in enumerate(item_buckets):
            self.groups.setdefault(bucket, []).append(index)
        self.epoch = epoch
        self.cursor = cursor
        self._batches: list[tuple[int, ...]] | None = None

    def epoch_batches(self, epoch: int) -> list[tuple[int, ...]]:
        rng = random.Random(self.seed * 1_000_003 + epoch)
        batches: list[tuple[int, ...]] = []
        for bucket in sorted(self.groups):
            indices = list(self.groups[bucket])
            rng.shuffle(indices)
            batches += [tuple(indices[i:i + self.batch_size]) for i in range(0, len(indices), self.batch_size)]
        rng.shuffle(batches)
        return batches

    def __len__(self) -> int:
        """Batches per epoch."""
        return sum(-(-len(v) // self.batch_size) for v in self.groups.values())

    def next_batch(self) -> tuple[int, ...]:
        if self._batches is None:
            self._batches = self.epoch_batches(self.epoch)
        if self.cursor >= len(self._batches):
            self.epoch += 1
            self.cursor = 0
            self._batches = self.epoch_batches(self.epoch)
        batch = self._batches[self.cursor]
        self.cursor += 1
        return batch

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "cursor": self.cursor}
