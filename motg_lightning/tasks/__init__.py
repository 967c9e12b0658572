"""Tasks beyond Reasoning-Gym's own generators: a JSONL file of question/answer pairs, registered
as the Reasoning-Gym dataset ``question_file`` on import (:mod:`.question_file`, scorers in
:mod:`.scorers`), and datasets users register themselves, imported through ``data.task_modules``
(:mod:`.task_modules`)."""

from .question_file import NAME, QuestionFileConfig, QuestionFileDataset, read_questions
from .scorers import load_scorer
from .task_modules import import_task_modules

__all__ = ["NAME", "QuestionFileConfig", "QuestionFileDataset", "import_task_modules", "load_scorer", "read_questions"]
