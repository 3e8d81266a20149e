"""load_subject: the frames and the model an example starts from, the same as loading them one by one."""

import torch

from headfields.data import load_insta_dataset, load_subject
from headfields.parametric import load_model
from headfields.synthetic import SyntheticVideoConfig, make_synthetic_video

from helpers import raises_naming

TINY = SyntheticVideoConfig(num_frames=6, num_val=1, num_test=2, resolution=16, episode_frames=2)


def test_the_same_as_loading_each_piece(tmp_path):
    root = make_synthetic_video(tmp_path / "video", TINY)
    subject = load_subject(root, eval_split="val")
    train = load_insta_dataset(root, "train")
    assert subject.root == root
    assert len(subject.train) == len(train) and len(subject.eval) == len(load_insta_dataset(root, "val")) == 1
    torch.testing.assert_close(subject.train.images, train.images)
    reference = load_model(train.model_path, train.model_type)
    torch.testing.assert_close(subject.parametric().vertices, reference().vertices)
    explicit = load_subject(root, model=train.model_path)  # the model given outright, here the same one
    torch.testing.assert_close(explicit.parametric().vertices, reference().vertices)


def test_bad_split_names_the_argument(tmp_path):
    with raises_naming("eval_split"):
        load_subject(tmp_path, eval_split="train")
