"""Stage 07: the paper's figures (`plots`) and case studies in Table 6's layout (`case_study`)."""

from recnb.report import case_study, plots
from recnb.report.config import ReportConfig

__all__ = ["ReportConfig", "case_study", "plots"]
