"""Transfer strategies: configurations of the one training loop (``tl_core.train.fit``), not second code paths.

A strategy says where the weights start (``init_from``: random, Word2Vec embeddings only, the whole source model,
or the source model after an intermediate stage on labelled reviews of related domains), what trains from the
first epoch, whether layer groups are unfrozen one per epoch, how the learning rate falls from the head down to
the embeddings, and which learning-rate schedule the loop follows. Everything else (optimiser, loop, metrics, and
the model architecture but for ``ngrams``) is shared. Introduced in ``notebooks/06_transfer.ipynb`` (scratch,
embeddings, frozen, finetune, zero-shot) and ``notebooks/07_fine_tuning.ipynb`` (gradual, selftrain, intermediate;
``ngrams``, a linear model of the target's words and word pairs that transfers nothing; and the ensembles
``ensemble``, ``hybrid`` and ``calibrated``, which train nothing themselves: they average the predictions of other
strategies' models on the same draw, ``calibrated`` after calibrating each on the draw's validation split).
ULMFiT's own recipe (Howard & Ruder 2018) starts the classifier from a language model instead of the source
classifier: ``ulmfit_imdb`` from the IMDB language model of ``notebooks/04_language_model.ipynb``, ``ulmfit`` from
that model after a second stage on the target's own unlabelled text (:func:`fine_tune_language_model` on
:func:`target_lm_texts`); both are listed in :data:`ULMFIT_STRATEGIES` and need ``language_models=``.

The package, one concern per module: :mod:`.strategies` (what a strategy is, the model it starts from, what trains
when and at which rates), :mod:`.protocol` (the target split once, labels drawn per seed, zero-shot),
:mod:`.target_lm` (ULMFiT's second stage, the language model on the target's text), :mod:`.selftrain`
(self-training), :mod:`.intermediate` (the intermediate stage on related domains), :mod:`.calibration`
(temperature scaling for ``calibrated``), :mod:`.grid` (:func:`run_grid`) and :mod:`.results` (summaries, paired
differences, intervals, the label multiplier). Every public name is re-exported here: ``transfer.run_grid`` and
``from tl_core.transfer import run_grid`` work as before. ``tl_core.lm`` is imported only inside the functions that
build or train a language model, because importing it loads the compiled extension.
"""

from ..data import check_related_specs  # the rule of the related specs, under its old name here
from .calibration import TEMPERATURES, fit_temperature
from .grid import run_grid
from .intermediate import (INTERMEDIATE_LR, INTERMEDIATE_RECIPE, Intermediate, IntermediateStages, intermediate_for,
                           related_data, related_specs, train_intermediate)
from .protocol import EVAL_BATCH_SIZE, TargetTask, draw_training_data, prepare_target, zero_shot
from .results import (accuracy_interval, format_summary, label_multiplier, labels_needed, merge_results,
                      paired_difference, summarize)
from .selftrain import MAX_UNLABELLED, pseudo_label, self_train, unlabelled_texts
from .strategies import (INIT_FROM, LANGUAGE_MODEL_STARTS, MODELS, STRATEGIES, ULMFIT_STRATEGIES, Strategy,
                         build_model, describe_strategies, discriminative_groups, from_intermediate,
                         from_language_model, get_strategy, learning_rate_plan, members_of, set_trainable,
                         train_strategy, training_plan, transfers)
from .target_lm import LM_FINE_TUNE_LR, fine_tune_language_model, language_model_payload, target_lm_texts


__all__ = [
    # strategies
    "INIT_FROM", "LANGUAGE_MODEL_STARTS", "MODELS", "Strategy", "STRATEGIES", "ULMFIT_STRATEGIES", "get_strategy",
    "members_of", "transfers", "from_intermediate", "from_language_model", "build_model", "set_trainable",
    "discriminative_groups", "training_plan", "train_strategy", "learning_rate_plan", "describe_strategies",
    # protocol
    "EVAL_BATCH_SIZE", "TargetTask", "prepare_target", "draw_training_data", "zero_shot",
    # target_lm
    "LM_FINE_TUNE_LR", "target_lm_texts", "fine_tune_language_model", "language_model_payload",
    # selftrain
    "MAX_UNLABELLED", "unlabelled_texts", "pseudo_label", "self_train",
    # intermediate (check_related_specs: tl_core.data's rule, under its old name here)
    "INTERMEDIATE_LR", "INTERMEDIATE_RECIPE", "Intermediate", "IntermediateStages", "intermediate_for",
    "related_specs", "related_data", "train_intermediate", "check_related_specs",
    # calibration
    "TEMPERATURES", "fit_temperature",
    # grid
    "run_grid",
    # results
    "summarize", "format_summary", "paired_difference", "accuracy_interval", "labels_needed", "label_multiplier",
    "merge_results",
]
