"""Apportion placeholder."""
from flask import Blueprint

bp = Blueprint("apportion", __name__, url_prefix="/apportion")
