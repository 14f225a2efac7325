"""Datasets: files on disk -> integer image tensors; download and checksums.

Every dataset loads as an :class:`ImageDataset`: uint8 images ``(N, C, H, W)`` with values in
``[0, levels)``, optional int64 labels, and ``batch(indices, generator)``, which gives the int64 tensors
that ``model.log_prob`` takes.

=========================  =======  ======  ===========  ============================================
name                       shape    levels  labels       train / valid / test
=========================  =======  ======  ===========  ============================================
mnist                      1x28x28  256     10 digits    first 50,000 / last 10,000 of train / 10,000
binarized_mnist            1x28x28  2       none         50,000 / 10,000 / 10,000 (Larochelle & Murray)
dynamic_binarized_mnist    1x28x28  2       10 digits    as mnist; train bits drawn afresh per batch
fashion_mnist              1x28x28  256     10 classes   as mnist
cifar10                    3x32x32  256     10 classes   first 45,000 / last 5,000 of train / 10,000
emoji                      3xSxS    256     none         by sha256 of the code point: 1,139 / 140 / 167
                                                         (S = 32 or 64; Noto Color Emoji drawn on white)
folder:PATH                CxSxS    256     sub-folders  90% / 5% / 5% of the images (seeded, by path)
=========================  =======  ======  ===========  ============================================

A fourth split, ``trainval``, is train followed by valid.

Files are looked for under each root in turn: the ``data_dir`` argument (``--data-dir``), then
``$PIXELCNN_DATA``, then the per-user cache ``$XDG_CACHE_HOME/pixelcnn`` (default
``~/.cache/pixelcnn``). The layout under a root is::

    mnist/            train-images-idx3-ubyte.gz  train-labels-idx1-ubyte.gz
                      t10k-images-idx3-ubyte.gz   t10k-labels-idx1-ubyte.gz
    fashion_mnist/    the same four names (also found in Debian's /usr/share/datasets/fashion-mnist)
    emoji/            NotoColorEmoji.ttf (also found in Debian's /usr/share/fonts/truetype/noto)
    binarized_mnist/  binarized_mnist.npz  (or binarized_mnist_{train,valid,test}.amat, converted once)
    cifar10/          cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}
                      (or cifar-10-python.tar.gz, extracted once)

Missing files are downloaded into the first root (:func:`data_root`), checked against
:data:`REMOTE_FILES` and written atomically. Where that cannot be done, a :class:`DataError` says which
files to put in which folder.

The package, one module a job:

    dataset.py     the ImageDataset object, DatasetInfo, the splits
    downloads.py   search roots, the published checksums (REMOTE_FILES), downloads, the missing-files error
    mnist.py       MNIST and Fashion-MNIST (IDX files), dynamic binarization, Larochelle & Murray's binarization
    cifar.py       CIFAR-10's pickled batches
    folders.py     folder:PATH
    registry.py    names -> DatasetInfo and loaders; load_dataset

References: Y. LeCun et al., "Gradient-based learning applied to document recognition", 1998 (MNIST);
H. Larochelle and I. Murray, "The Neural Autoregressive Distribution Estimator", AISTATS 2011 (binarized
MNIST); H. Xiao, K. Rasul and R. Vollgraf, "Fashion-MNIST", 2017; A. Krizhevsky, "Learning Multiple Layers
of Features from Tiny Images", 2009 (CIFAR-10).
"""

from __future__ import annotations

# Every module-level name that pixelcnn.data offered as one module, re-exported from its new home.
from pixelcnn.data.cifar import CIFAR10_CLASSES, CIFAR_DIR, CIFAR_FILES, CIFAR_TRAIN_BATCHES
from pixelcnn.data.dataset import SPLITS, DatasetInfo, ImageDataset
from pixelcnn.data.downloads import DEBIAN_FASHION_MNIST, ENV_VAR, IDX_FILES, REMOTE_FILES, RemoteFile, data_root
from pixelcnn.data.folders import (FOLDER_DEFAULT_IMAGE_SIZE, FOLDER_PREFIX, FOLDER_SPLIT_FRACTIONS, FOLDER_SPLIT_SEED,
                                   IMAGE_SUFFIXES)
from pixelcnn.data.mnist import (BINARIZED_CONTENT_SHA256, BINARIZED_NPZ, EVAL_BINARIZATION_SEED, FASHION_MNIST_CLASSES,
                                 MNIST_CLASSES, MNIST_VALID_SIZE)
from pixelcnn.data.registry import available_datasets, dataset_info, load_dataset

__all__ = [
    "ImageDataset", "DatasetInfo", "available_datasets", "dataset_info", "load_dataset", "data_root",
    "SPLITS", "FOLDER_PREFIX", "REMOTE_FILES",
]
