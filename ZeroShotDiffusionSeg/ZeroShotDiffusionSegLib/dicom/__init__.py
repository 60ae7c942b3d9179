"""DICOM in and out: choosing one series in a folder, and writing results as DICOM Segmentations."""
