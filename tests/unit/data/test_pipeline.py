import numpy as np
import pytest

from bloodcell_jax.data import pipeline, splits
from bloodcell_jax.errors import UserError
from helpers.images import tiny_set


def test_stream_is_a_sequence_of_seeded_permutations():
  examples, epochs = pipeline.stream_indices(7, seed=1, start=0, stop=21)
  for e in range(3):
    assert sorted(examples[epochs == e].tolist()) == list(range(7))
  assert examples[:7].tolist() != examples[7:14].tolist()
  again, _ = pipeline.stream_indices(7, seed=1, start=0, stop=21)
  np.testing.assert_array_equal(examples, again)


def test_resuming_the_stream_gives_the_same_positions():
  full, full_epochs = pipeline.stream_indices(11, seed=0, start=0, stop=40)
  tail, tail_epochs = pipeline.stream_indices(11, seed=0, start=13, stop=40)
  np.testing.assert_array_equal(full[13:], tail)
  np.testing.assert_array_equal(full_epochs[13:], tail_epochs)


def test_processes_split_each_global_batch_into_disjoint_parts():
  values = np.arange(24)
  parts = [pipeline.process_slice(values, 8, p, 2) for p in range(2)]
  assert parts[0].tolist() == [0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19]
  np.testing.assert_array_equal(np.sort(np.concatenate(parts)), values)


def test_train_batches_resume_exactly_and_augment_per_image():
  source = pipeline.InMemorySource(tiny_set())
  kwargs = dict(seed=3, batch_size=4, num_steps=6, augmentation="flip|random_brightness(0.3)")
  full = list(pipeline.train_batches(source, start_step=0, **kwargs))
  resumed = list(pipeline.train_batches(source, start_step=2, **kwargs))
  assert len(full) == 6 and len(resumed) == 4
  for a, b in zip(full[2:], resumed):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
  # Brightness offsets differ between the images of one batch.
  first = full[0]["image"]
  originals = source.data.images[pipeline.stream_indices(10, 3, 0, 4)[0]].astype(np.float32)
  offsets = [np.median(a - o) for a, o in zip(first, originals)]
  assert len(set(np.round(offsets, 3))) > 1


def test_augmentation_of_an_example_does_not_depend_on_batching_or_process():
  source = pipeline.InMemorySource(tiny_set(n=8))
  kwargs = dict(seed=5, start_step=0,
                augmentation="affine(rotate=0.2, zoom=0.2)|random_contrast(0.5)")
  whole = np.concatenate([b["image"] for b in pipeline.train_batches(
      source, batch_size=8, num_steps=1, **kwargs)])
  halves = [np.concatenate([b["image"] for b in pipeline.train_batches(
      source, batch_size=8, num_steps=1, process_index=p, process_count=2, **kwargs)])
            for p in range(2)]
  smaller = np.concatenate([b["image"] for b in pipeline.train_batches(
      source, batch_size=4, num_steps=2, **kwargs)])
  # Equal up to float rounding: batched reductions may sum in another order.
  np.testing.assert_allclose(whole, np.concatenate(halves), atol=1e-3)
  np.testing.assert_allclose(whole, smaller, atol=1e-3)


@pytest.mark.parametrize("n, batch, processes", [(10, 4, 1), (10, 4, 2), (8, 8, 1), (3, 8, 2)])
def test_eval_visits_every_example_exactly_once(n, batch, processes):
  source = pipeline.InMemorySource(tiny_set(n=n))
  seen = []
  for p in range(processes):
    for b in pipeline.eval_batches(source, batch_size=batch, process_index=p,
                                   process_count=processes):
      assert b["image"].shape[0] == batch // processes
      for image, valid in zip(b["image"], b["mask"]):
        if valid:
          seen.append(next(i for i, x in enumerate(source.data.images)
                           if np.array_equal(x, image.astype(np.uint8))))
  assert sorted(seen) == list(range(n))


def test_seeded_eval_augmentation_is_repeatable_and_changes_images():
  source = pipeline.InMemorySource(tiny_set(n=4))
  spec = "flip|affine(rotate=0.5)|random_brightness(0.2)"
  a = next(pipeline.eval_batches(source, batch_size=4, augmentation=spec, seed=1))["image"]
  b = next(pipeline.eval_batches(source, batch_size=4, augmentation=spec, seed=1))["image"]
  c = next(pipeline.eval_batches(source, batch_size=4, augmentation=spec, seed=2))["image"]
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  assert not np.array_equal(a, source.data.images.astype(np.float32))


def test_mixing_ops_are_refused_for_evaluation():
  source = pipeline.InMemorySource(tiny_set(n=4))
  with pytest.raises(UserError, match="mixup and cutmix mix training batches"):
    pipeline.eval_batches(source, batch_size=4, augmentation="flip|mixup(0.2)",
                          where="config.augment.eval_strong")


def test_jsd_views_come_out_of_the_training_stream():
  source = pipeline.InMemorySource(tiny_set(n=8))
  batch = next(pipeline.train_batches(source, seed=0, batch_size=4, start_step=0, num_steps=1,
                                      augmentation="flip|augmix(severity=0.3)", views=2))
  assert batch["views"].shape == (4, 2, 16, 16, 3) and batch["image"].shape == (4, 16, 16, 3)
  # The clean image is only flipped: it is one of the originals, up to a flip.
  originals = {x.astype(np.float32).tobytes() for img in source.data.images
               for x in (img, img[:, ::-1], img[::-1], img[::-1, ::-1])}
  assert all(x.tobytes() in originals for x in batch["image"])


def test_stratified_split_keeps_class_shares_and_is_seeded():
  data = tiny_set(n=300, num_classes=3)
  data.labels[:] = np.repeat([0, 1, 2], [200, 70, 30])
  train, val = splits.stratified_split(data, 0.1, seed=0)
  assert np.bincount(val.labels).tolist() == [20, 7, 3]
  assert len(set(train.ids) & set(val.ids)) == 0 and len(train) + len(val) == 300
  train2, _ = splits.stratified_split(data, 0.1, seed=0)
  np.testing.assert_array_equal(train.ids, train2.ids)


def test_split_too_small_for_every_class_is_a_user_error():
  with pytest.raises(UserError, match="val_fraction=0.1 of 10 images leaves 1 in one part"):
    splits.stratified_split(tiny_set(n=10, num_classes=3), 0.1, seed=0)


def test_balanced_class_weights_follow_the_formula():
  labels = np.repeat([0, 1, 2], [60, 30, 10])
  weights = splits.balanced_class_weights(labels, 4)
  np.testing.assert_allclose(weights, [100 / (3 * 60), 100 / (3 * 30), 100 / (3 * 10), 0.0],
                             rtol=1e-6)
