"""Metrics (ATWV/MTWV, AP, EER/AUC), protocols, peer systems, reports and plots."""
