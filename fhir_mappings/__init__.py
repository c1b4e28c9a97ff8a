"""Outbound FHIR: questionnaires, scoring and the transaction Bundles written to the EHR.

Pure code: no I/O beyond reading the packaged Questionnaire JSON, no Flask, no state.
"""
