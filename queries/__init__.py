"""The Cypher library: one query per ``.cypher`` file, each opening with a header of comments."""
