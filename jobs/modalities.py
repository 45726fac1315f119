"""The service layer's modality table: per modality (core.modalities), how its built-in datasets
are registered and how a job on one of its datasets is checked at submit. jobs.datasets and
jobs.submit dispatch through these dicts, keyed by the dataset's modality.

To add a modality: its name and built-ins in core/modalities.py; a module of its
datasets (like jobs/images.py or jobs/text.py: register a built-in, load the splits) and one of its
submit checks (like jobs/submit_text.py: check_pretrain, check_evaluate, check_embed_index, on top
of the shared jobs/checks.py); then one entry in each dict below. Those modules import the shared
ones (jobs.sources, jobs.checks), never another modality's."""
from __future__ import annotations

from core.modalities import AUDIO, IMAGE, TEXT
from jobs import audio, images, submit_audio, submit_image, submit_text, text

# (session, project_id, name) -> the ready Dataset row of a built-in
REGISTER_BUILTIN = {IMAGE: images.register_builtin_image, TEXT: text.register_builtin_text,
                    AUDIO: audio.register_builtin_audio}
# (session, project_id, spec, dataset, max_parameters) -> (spec dict, resolved recipe)
CHECK_PRETRAIN = {IMAGE: submit_image.check_pretrain, TEXT: submit_text.check_pretrain,
                  AUDIO: submit_audio.check_pretrain}
# (session, project_id, spec, dataset, max_parameters) -> spec dict
CHECK_EVALUATE = {IMAGE: submit_image.check_evaluate, TEXT: submit_text.check_evaluate,
                  AUDIO: submit_audio.check_evaluate}
# (session, project_id, spec, dataset) -> spec dict
CHECK_EMBED_INDEX = {IMAGE: submit_image.check_embed_index, TEXT: submit_text.check_embed_index,
                     AUDIO: submit_audio.check_embed_index}
