"""Console pages (placeholder)."""
from flask import Blueprint

bp = Blueprint("batch", __name__, url_prefix="/batch")
