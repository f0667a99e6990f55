"""The nets factory's records (ckptkit.zoo.nets): TF-free facts that plan, finetune, predict,
export and the pretrained registry read."""
import subprocess
import sys

import pytest

from ckptkit.errors import CkptError
from ckptkit.zoo.nets import NETS, PREPROCESSING, get_net


def test_registry_loads_no_tensorflow():
    code = ("import sys\nfrom ckptkit.zoo.nets import NETS, get_net\n"
            "get_net('lenet')\n"
            "print(len(NETS), sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'tf_slim', 'tf_keras', 'keras')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.split() == ["31", "[]"]


@pytest.mark.parametrize("name", sorted(NETS))
def test_record_is_consistent(name):
    record = get_net(name)
    assert record.name == name and get_net(record) is record
    assert record.preprocessing in PREPROCESSING
    assert record.classifier_scopes and all(s.startswith(record.scope + "/")
                                            for s in record.classifier_scopes)
    assert record.label_offset == (1 if record.num_classes == 1001 else 0)
    assert record.channels == (1 if name == "lenet" else 3)


@pytest.mark.parametrize("name, classes, offset, size, preprocessing, logits", [
    ("resnet_v1_50", 1000, 0, 224, "vgg", ("resnet_v1_50/logits",)),
    ("resnet_v2_101", 1001, 1, 299, "inception", ("resnet_v2_101/logits",)),
    ("inception_v3", 1001, 1, 299, "inception",
     ("InceptionV3/Logits", "InceptionV3/AuxLogits")),
    ("vgg_19", 1000, 0, 224, "vgg", ("vgg_19/fc8",)),
    ("lenet", 10, 0, 28, "lenet", ("LeNet/fc4",)),
    ("cifarnet", 10, 0, 32, "cifarnet", ("CifarNet/logits",)),
    ("mobilenet_v2_140", 1001, 1, 224, "inception", ("MobilenetV2/Logits",)),
    ("inception_resnet_v2", 1001, 1, 299, "inception",
     ("InceptionResnetV2/Logits", "InceptionResnetV2/AuxLogits")),
    ("overfeat", 1000, 0, 231, "vgg", ("overfeat/fc8",)),
    ("nasnet_mobile", 1001, 1, 224, "inception", ("/final_layer", "/aux_7")),
])
def test_record_facts(name, classes, offset, size, preprocessing, logits):
    r = get_net(name)
    assert (r.num_classes, r.label_offset, r.image_size, r.preprocessing, r.classifier_scopes) == \
        (classes, offset, size, preprocessing, logits)


def test_unknown_net_names_the_known_ones():
    known = ("alexnet_v2, cifarnet, inception_resnet_v2, inception_v1, inception_v2, "
             "inception_v3, inception_v4, lenet, mobilenet_v1, mobilenet_v1_025, "
             "mobilenet_v1_050, mobilenet_v1_075, mobilenet_v2, mobilenet_v2_035, "
             "mobilenet_v2_050, mobilenet_v2_075, mobilenet_v2_130, mobilenet_v2_140, "
             "mobilenet_v3_large, mobilenet_v3_small, nasnet_mobile, overfeat, pnasnet_mobile, "
             "resnet_v1_101, resnet_v1_152, resnet_v1_50, resnet_v2_101, resnet_v2_152, "
             "resnet_v2_50, vgg_16, vgg_19")
    with pytest.raises(CkptError) as e:
        get_net("resnet50")
    assert str(e.value) == f"unknown net 'resnet50'; known: {known}; closest: resnet_v1_50"
    with pytest.raises(CkptError, match=r"^unknown net 'zzz'; known: alexnet_v2, .*vgg_19$"):
        get_net("zzz")
    assert get_net("ResNet-V1-50").name == "resnet_v1_50"
