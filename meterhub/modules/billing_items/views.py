"""Console pages (placeholder)."""
from flask import Blueprint

bp = Blueprint("billing_items", __name__, url_prefix="/billing_items")
