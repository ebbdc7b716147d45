"""Console pages (placeholder)."""
from flask import Blueprint

bp = Blueprint("postpaid", __name__, url_prefix="/postpaid")
