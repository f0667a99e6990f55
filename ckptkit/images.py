"""Which files are images: the encoded formats every decoder of ours reads (TF's decode_image,
the ONNX engine's Pillow decoding), judged by name, so that `finetune`'s class folders,
`predict`'s folders and `port --check` take the same files. Hidden files and folders
(.DS_Store, .ipynb_checkpoints/) are never images."""
import os

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def is_image(name):
    """Whether a file called `name` (no folder) is an image by its extension, in any case."""
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def images_in(folder):
    """The image files below `folder`, recursively, sorted by path."""
    found = []
    for here, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [os.path.join(here, f) for f in files if is_image(f)]
    return sorted(found)
