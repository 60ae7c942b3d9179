"""Cohorts: many volumes segmented with one loaded model, in one process or on a Ray cluster."""
