"""What is specific to ``image-cnn``: determinism, augmentation on the training split only,
the input schema it states, and what it logs."""

import numpy as np
import pytest
import torch

from driftloop.data import load_window, split_by_time
from driftloop.datakinds.image import IMAGE
from driftloop.families import get_family
from driftloop.families.image_cnn import augment, pixels
from driftloop.spec import load_spec
from tests.images import write_toy_images

QUICK = {"max_epochs": 6, "patience": 3, "filters": 8, "embedding": 16}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    spec = load_spec(write_toy_images(tmp_path_factory.mktemp("img"), n=450))
    return spec, split_by_time(load_window(spec, None, None), spec)


def test_same_seed_same_model_other_seed_other_model(toy):
    spec, s = toy
    family = get_family("image-cnn")
    a = family.train(s, spec, QUICK).model.predict(s.test)["probabilities"]
    b = family.train(s, spec, QUICK).model.predict(s.test)["probabilities"]
    c = family.train(s, spec, {**QUICK, "seed": 1}).model.predict(s.test)["probabilities"]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_augmentation_moves_pixels_but_keeps_the_image():
    x = torch.zeros(4, 1, 8, 8)
    x[:, :, 2:6, 3:5] = 1.0
    gen = torch.Generator().manual_seed(0)
    out = augment(x, gen, rotation=10.0, shift=0.125)
    assert out.shape == x.shape and not torch.equal(out, x)
    assert (out.sum(dim=(1, 2, 3)) - x.sum(dim=(1, 2, 3))).abs().max() < 3.0  # ink is kept
    assert torch.allclose(augment(x, gen, rotation=0.0, shift=0.0), x, atol=1e-6)


def test_the_schema_states_shape_range_and_classes_and_what_is_logged(toy):
    spec, s = toy
    model = get_family("image-cnn").train(s, spec, QUICK).model
    schema = model.input_schema(spec)
    assert schema.kind == "image" and schema.input.shape == [1, 12, 12]
    assert schema.input.datatype == "FP32" and schema.input.value_range == (0.0, 1.0)
    assert schema.classes == ["a", "b", "c"]
    assert schema.names == [f"emb_{i}" for i in range(16)] + ["brightness", "contrast", "sharpness"]
    pred, logged = model.predict_logged({IMAGE: pixels(s.test.head(5))})
    assert list(logged) == schema.names and len(pred["label"]) == 5
    # Served float tensors and stored PNG rows are the same prediction path.
    np.testing.assert_allclose(
        model.predict(s.test.head(5))["probabilities"], pred["probabilities"], rtol=1e-6
    )
