"""The test suite, a package: helpers are imported package-relative (``from .audit_helpers import ...``)."""
