"""Data for the tutorial: Fashion-MNIST by default, the paper's datasets on request.

The bottom of the package's dependency chain (``data`` -> ``models`` ->
``train`` -> ``evaluate`` -> ``experiments``): nothing here imports another
``rkd_tutorial`` module.

Protocol. RKD (Park et al., CVPR 2019) evaluates metric learning by image
retrieval on classes never seen in training: CUB-200-2011 trains on classes
1-100 and tests on 101-200, Cars196 on 1-98 / 99-196, Stanford Online
Products on ``Ebay_train.txt`` / ``Ebay_test.txt``. The book does the same
on Fashion-MNIST: train on classes 0-4, test retrieval on classes 5-9.

Modules:

* :mod:`.fashion_mnist` - finding and loading Fashion-MNIST.
* :mod:`.splits` - the class-disjoint split and small per-class subsets.
* :mod:`.sampler` - ``m`` examples per class in every batch.
* :mod:`.device_loader` - batches from a dataset held on the GPU, with
  batched augmentation.
* :mod:`.paper_datasets` - CUB-200-2011, Cars196, Stanford Online Products,
  CIFAR-100, and the ImageNet-style transforms.
* :mod:`.archives` - unpacking downloaded archives safely.

Typical use::

    from rkd_tutorial.data import (DeviceLoader, class_disjoint_split,
                                   load_fashion_mnist)

    images, labels = load_fashion_mnist(train=True)
    (x_train, y_train), (x_test, y_test) = class_disjoint_split(images, labels)
    loader = DeviceLoader(x_train, y_train, batch_size=128)
    for epoch in range(10):
        loader.set_epoch(epoch)
        for x, y in loader:
            ...
"""

from .archives import safe_extract
from .device_loader import (
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    DeviceLoader,
    default_device,
    normalize_images,
    random_crop_flip,
)
from .fashion_mnist import (
    FASHION_CLASSES,
    FASHION_MNIST_DEBIAN,
    debian_dir,
    default_root,
    load_fashion_mnist,
)
from .paper_datasets import (
    CUB200,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Cars196,
    StanfordOnlineProducts,
    cifar100,
    paper_transforms,
)
from .sampler import ClassBalancedBatchSampler
from .splits import class_disjoint_split, subset_per_class

__all__ = [
    "CUB200",
    "FASHION_CLASSES",
    "FASHION_MNIST_DEBIAN",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Cars196",
    "ClassBalancedBatchSampler",
    "DeviceLoader",
    "StanfordOnlineProducts",
    "cifar100",
    "class_disjoint_split",
    "debian_dir",
    "default_device",
    "default_root",
    "load_fashion_mnist",
    "normalize_images",
    "paper_transforms",
    "random_crop_flip",
    "safe_extract",
    "subset_per_class",
]
