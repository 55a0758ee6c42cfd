"""Any timm name as a backbone: canonical spelling, metadata from timm's config and from the network (checked
against the study's own labels), study entries kept, clear errors; and the two normalization rules."""

from __future__ import annotations

import pytest
import timm
import torch

from rft_fast import models
from rft_fast.models.timm_names import arch_type, size_class
from rft_fast.train import TrainConfig

CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# The study's backbones whose timm mean/std differ from the study's rule (ImageNet unless the name has "laion").
STUDY_DIFFERENCES = [
    "vit_base_patch16_224.augreg_in1k",
    "vit_base_patch16_224.augreg_in21k",
    "vit_base_patch16_224.augreg_in21k_ft_in1k",
    "vit_small_patch16_224.augreg_in1k",
    "vit_small_patch16_224.augreg_in21k",
    "vit_small_patch16_224.augreg_in21k_ft_in1k",
    "eva02_base_patch14_224.mim_in22k",
    "eva02_tiny_patch14_224.mim_in22k",
    "coatnet_0_rw_224.sw_in1k",
    "coatnet_2_rw_224.sw_in12k",
    "coatnet_2_rw_224.sw_in12k_ft_in1k",
    "mobilevit_s.cvnets_in1k",
]


def test_a_bare_architecture_resolves_to_timms_default_tag():
    spec = models.get("resnet18")
    cfg = timm.get_pretrained_cfg("resnet18")
    assert spec.name == f"resnet18.{cfg.tag}" == "resnet18.a1_in1k"
    assert models.get("resnet18.a1_in1k") is spec and models.get("ResNet18") is spec  # cached, case-folded
    assert (spec.timm_name, spec.pretrained_tag, spec.hub_id) == ("resnet18", "a1_in1k", cfg.hf_hub_id)
    assert (spec.mean, spec.std, spec.input_size) == (tuple(cfg.mean), tuple(cfg.std), cfg.input_size[-1])
    assert (spec.arch, spec.size, spec.pretraining, spec.study) == ("convolutional", "small", "unknown", False)
    assert spec.checkpoint_format == "timm" and cfg.hf_hub_id in spec.weights


def test_a_timm_name_of_a_study_entry_is_that_entry():
    assert models.get("resnet50") is models.REGISTRY["resnet50.a1_in1k"]  # bare -> default tag -> study entry
    spec = models.get("vit_small_patch16_224.augreg_in21k")
    assert spec is models.REGISTRY[spec.name] and spec.study and spec.pretraining == "supervised"
    assert models.get("convnext_base.clip_laion2b").name == "clip_convnext_base_w.laion2b_s13b_b82k"
    assert models.get("robust_resnet50").study and models.get("resnet50").name != "robust_resnet50"


def test_non_study_attention_name_takes_timms_config():
    spec = models.get("vit_small_patch16_384.augreg_in21k_ft_in1k")
    assert (spec.input_size, spec.arch, spec.size, spec.study) == (384, "attention", "medium", False)
    with torch.device("meta"):
        model = timm.create_model("vit_small_patch16_384", num_classes=0)
    assert models.num_params(spec) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "name",
    [
        "resnet50.a1_in1k",
        "efficientnet_b0.ra_in1k",
        "deit_tiny_patch16_224.fb_in1k",
        "swin_tiny_patch4_window7_224.ms_in1k",
        "coat_tiny.in1k",
        "edgenext_small.usi_in1k",
        "mobilevit_s.cvnets_in1k",
    ],
)
def test_derived_arch_agrees_with_the_studys_labels(name):
    spec = models.get(name)
    with torch.device("meta"):
        model = timm.create_model(spec.timm_name, num_classes=0)
    assert arch_type(model) == spec.arch


def test_arch_is_unknown_when_neither_convolution_nor_attention_and_untrained_has_no_hub():
    spec = models.get("mixer_s16_224")  # MLP-Mixer: a patchify stem and MLPs only; timm has no weights for it
    assert (spec.name, spec.arch, spec.hub_id) == ("mixer_s16_224.untrained", "unknown", None)
    with pytest.raises(ValueError, match="'mixer_s16_224.untrained' needs its pretrained weights as a local file"):
        models.create(spec.name, 3)


def test_size_classes_are_the_studys_bounds():
    assert [size_class(n) for n in (0, 19_999_999, 20_000_000, 49_999_999, 50_000_000)] == [
        "small",
        "small",
        "medium",
        "medium",
        "large",
    ]


def test_unknown_names_suggest_registered_and_timm_names():
    with pytest.raises(ValueError, match=r"unknown backbone 'resnet18\.a1_in1kk'; did you mean: .*resnet18\.a1_in1k"):
        models.get("resnet18.a1_in1kk")  # a known architecture, an unknown tag
    with pytest.raises(ValueError, match="--timm PATTERN"):
        models.get("not_a_network")


def test_list_timm_and_the_cli_mark_the_study(capsys):
    from rft_fast import cli

    assert "resnet18.a1_in1k" in models.list_timm("resnet18*")
    assert cli.main(["models", "list", "--timm", "resnet50.a*"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "resnet50.a1_in1k  (study)" in out and "resnet50.a1h_in1k" in out
    assert out[-1].startswith(f"{len(models.list_timm('resnet50.a*'))} timm pretrained name(s)")
    assert cli.main(["models", "list", "robust_*"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:2] == ["name", "study"] and all(row.split()[1] == "yes" for row in table[2:])


def test_unknown_is_accepted_for_derived_metadata():
    spec = models.BackboneSpec(name="x", timm_name="test_resnet", arch="unknown", size="unknown", pretraining="unknown")
    assert (spec.arch, spec.size, spec.pretraining, spec.study, spec.hub_id) == ("unknown",) * 3 + (False, None)


# ---------------------------------------------------------------------------------------------------- normalization
def test_study_rule_differs_from_timms_for_these_backbones():
    differences = models.study_differences()
    assert [name for name, _, _ in differences] == STUDY_DIFFERENCES
    assert all(study == IMAGENET for _, _, study in differences)  # none of them has "laion" in its name


def test_study_rule_is_clip_for_laion_names_and_imagenet_otherwise():
    assert models.mean_std(models.get("vit_base_patch16_clip_224.laion2b"), "study") == CLIP
    assert models.mean_std(models.get("clip_convnext_base_w.laion_aesthetic_s13b_b82k"), "study") == CLIP
    vit = models.get("vit_small_patch16_224.augreg_in1k")
    assert models.mean_std(vit, "study") == IMAGENET and models.mean_std(vit, "pretrained") == (vit.mean, vit.std)
    with pytest.raises(ValueError, match=r"normalization must be one of \['pretrained', 'study'\], got 'clip'"):
        models.mean_std(vit, "clip")


def test_create_applies_the_chosen_rule_inside_the_model():
    study = models.create("test_vit", 3, random_init=True, normalization="study")
    own = models.create("test_vit", 3, random_init=True)
    assert study.normalization == "study" and own.normalization == "pretrained"
    assert study.mean.flatten().tolist() == pytest.approx(IMAGENET[0])
    assert own.mean.flatten().tolist() == pytest.approx(models.get("test_vit").mean)
    with pytest.raises(ValueError, match="normalization"):
        models.create("test_vit", 3, random_init=True, normalization="imagenet")


def test_train_config_normalization_enters_hparams_only_when_not_default():
    base = TrainConfig(backbone="tiny_resnet", dataset="digits", random_init=True)
    study = TrainConfig(backbone="tiny_resnet", dataset="digits", random_init=True, normalization="study")
    assert "normalization" not in base.hparams() and base.run_id() == "2c98ae370d7d"  # ids of earlier runs kept
    assert study.hparams()["normalization"] == "study" and study.run_id() != base.run_id()
    with pytest.raises(ValueError, match="normalization must be one of"):
        TrainConfig(backbone="tiny_resnet", dataset="digits", normalization="laion")
