"""Training data: dataset preparation (``kneel prepare``), torch datasets, augmentations and folds.

* :func:`kneel.data.prepare.prepare_datasets`: DICOMs + annotations -> ``DATA/{lc,hc}`` + ``folds.csv``.
* :class:`kneel.data.datasets.LandmarkDataset`: one stage of ``DATA`` as network inputs and normalised targets.
* :class:`kneel.data.augment.Augmentation` / :class:`~kneel.data.augment.AugmentationConfig`: the reference recipe.
* :mod:`kneel.data.folds`: subject-grouped (optionally KL-stratified) folds.
* :mod:`kneel.data.layout`: the ``DATA`` folder and its metadata tables.

Submodules are imported on use (``from kneel.data.datasets import LandmarkDataset``) so that ``import kneel.data``
does not pull in torch.
"""
