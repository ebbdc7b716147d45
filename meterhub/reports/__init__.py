"""Reports and exports: definitions over the rollups, ledger and logs; streaming xlsx; rq export jobs;
scheduled reports by email.

    from meterhub.reports import all_reports, ReportFilter, write_xlsx, create_export, enqueue_export
"""

from .exports import create_export, enqueue_export, run_export
from .filters import ReportFilter
from .registry import Column, ReportDefinition, all_reports, get_report
from .xlsx import write_xlsx

__all__ = ["Column", "ReportDefinition", "ReportFilter", "all_reports", "create_export", "enqueue_export",
           "get_report", "run_export", "write_xlsx"]
