"""Every release scene config against the values of its release yaml (docs/method.md §2.6).

RELEASE holds what each `InterGen/configs/interfusion-if/<scene>.yaml` of the release says, copied
from the yamls: the four prompts (object, human, interaction, head), the guide-body mode (aug_rot /
aug_trans flags), the camera distance range and the object's shape_weights.
"""
import os

import pytest

from interfusion_jax.config import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RELEASE = {
    "sitting_on_a_chair": (
        "a photo of a chair, 8K, HD",
        "a photo of a person in a military uniform, 8K, HD",
        "a photo of a person in a military uniform sitting on a chair, 8K, HD",
        "a photo of head of a person in a military uniform, 8K, HD",
        "aug_rot", (2.5, 3.0), (0.001, 0.01, 0.1),
    ),
    "sitting_on_a_sofa": (
        "a photo of a sofa, 8K, HD",
        "a photo of an elderly man wearing a beige suit, 8K, HD",
        "a photo of an elderly man wearing a beige suit sitting on a sofa, 8K, HD",
        "a photo of head of an elderly man wearing a beige suit, 8K, HD",
        "aug_rot", (2.5, 3.0), (0.001, 0.01, 0.1),
    ),
    "carrying_a_backpack": (
        "a photo of a backpack, 8K, HD",
        "a photo of a person in a fleece pullover and hiking pants, 8K, HD",
        "a photo of a person in a fleece pullover and hiking pants carrying a backpack, 8K, HD",
        "a photo of head of a person in a fleece pullover and hiking pants, 8K, HD",
        "default", (2.5, 3.0), (0.01, 0.1, 0.1),
    ),
    "jumping_a_skateboard": (
        "a photo of a skateboard, 8K, HD",
        "a photo of a person in a cropped hoodie and bike shorts, 8K, HD",
        "a photo of a person in a cropped hoodie and bike shorts jumping a skateboard, 8K, HD",
        "a photo of head of a person in a cropped hoodie and bike shorts, 8K, HD",
        "aug_trans", (2.5, 3.0), (0.01, 0.1, 0.1),
    ),
    "playing_the_guitar": (
        "a photo of a guitar, 8K, HD",
        "a photo of a man in a quilted gilet and moleskin trousers, 8K, HD",
        "a photo of a man in a quilted gilet and moleskin trousers playing the guitar, 8K, HD",
        "a photo of head of a man in a quilted gilet and moleskin trousers, 8K, HD",
        "default", (2.5, 3.0), (0.001, 0.01, 0.1),
    ),
    "playing_the_saxophone": (
        "a photo of a saxophone, 8K, HD",
        "a photo of a man in a velvet smoking jacket and silk pajama pants, 8K, HD",
        "a photo of a man in a velvet smoking jacket and silk pajama pants playing the "
        "saxophone, 8K, HD",
        "a photo of head of a man in a velvet smoking jacket and silk pajama pants, 8K, HD",
        "default", (2.5, 3.0), (0.01, 0.1, 0.1),
    ),
    "pushing_a_shopping_cart": (
        "a photo of a shopping cart, 8K, HD",
        "a photo of a man in a puffer jacket and wool beanie, 8K, HD",
        "a photo of a man in a puffer jacket and wool beanie carrying a shopping cart, 8K, HD",
        "a photo of head of a man in a puffer jacket and wool beanie, 8K, HD",
        "default", (2.5, 3.0), (0.001, 0.01, 0.1),
    ),
    "reading_a_laptop": (
        "a photo of a laptop, 8K, HD",
        "a photo of a security guard, 8K, HD",
        "a photo of a security guard reading a laptop, 8K, HD",
        "a photo of head of a security guard, 8K, HD",
        "default", (2.0, 2.7), (0.001, 0.01, 0.1),
    ),
    "riding_a_bike": (
        "a photo of a bike, 8K, HD",
        "a photo of a man with a full beard wearing a flannel shirt, 8K, HD",
        "a photo of a man with a full beard wearing a flannel shirt riding a bike, 8K, HD",
        "a photo of head of a man with a full beard wearing a flannel shirt, 8K, HD",
        "default", (2.5, 3.0), (0.001, 0.01, 0.1),
    ),
    "riding_a_horse": (
        "a photo of a horse, 8K, HD",
        "a photo of a man in a paisley waistcoat and bowler hat, 8K, HD",
        "a photo of a man in a paisley waistcoat and bowler hat riding a horse, 8K, HD",
        "a photo of head of a man in a paisley waistcoat and bowler hat, 8K, HD",
        "default", (2.5, 3.0), (0.001, 0.01, 0.1),
    ),
    "riding_a_motorcycle": (
        "a photo of a motorcycle, 8K, HD",
        "a photo of a man with blond hair wearing a brown leather jacket, 8K, HD",
        "a photo of a man with blond hair wearing a brown leather jacket riding a "
        "motorcycle, 8K, HD",
        "a photo of head of a man with blond hair wearing a brown leather jacket, 8K, HD",
        "default", (2.5, 3.0), (0.001, 0.01, 0.1),
    ),
}


@pytest.mark.parametrize("scene", sorted(RELEASE))
def test_scene_follows_its_release_yaml(scene):
    c = load_config(os.path.join(ROOT, "configs", f"{scene}.py"))
    obj, human, interaction, head, mode, distance_range, shape_weights = RELEASE[scene]
    assert c.name == scene
    assert dict(c.prompts) == dict(object=obj, human=human, interaction=interaction, head=head)
    assert c.body.mode == mode
    assert tuple(c.camera.distance_range) == distance_range
    assert tuple(c.loss.shape_weights) == shape_weights
    # Shared by every release yaml.
    assert c.seed == 0 and c.guidance.guidance_scale == 20.0 and c.train.max_steps == 10000
    assert c.camera.eval_distance == 2.0
