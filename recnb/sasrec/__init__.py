"""Stage 02: the SASRec teacher (model, training, full-ranking evaluation, top-N rankings).

`load_sasrec` and `teacher_rank` are how stage 05 loads the teacher to score answers.
"""

from recnb.sasrec.config import SASRecConfig
from recnb.sasrec.evaluate import build_teacher_topk, evaluate_all
from recnb.sasrec.model import SASRec, load_sasrec, save_sasrec, score_histories, teacher_rank
from recnb.sasrec.train import build_sasrec, train_sasrec, write_outputs

__all__ = ["SASRec", "SASRecConfig", "build_sasrec", "build_teacher_topk", "evaluate_all", "load_sasrec",
           "save_sasrec", "score_histories", "teacher_rank", "train_sasrec", "write_outputs"]
