"""The data contract: records, readers/writers, validation, and the generated shapes world."""
