// name: checkpoint_artifact
// description: Where the artifact of complete checkpoint $checkpoint lies: the URI of one of its stored bases
//   (the artifact's bases.safetensors as a file:// URI, the subspace as its fragment); no row for an unknown
//   checkpoint. The steer command opens the artifact there.
// returns: basis_uri
// params: $checkpoint (string)
MATCH (:Checkpoint {id: $checkpoint, status: 'complete'})-[:HAS_BLOCK]->(:Block)-[:HAS_SUBSPACE]->(s:Subspace)
RETURN s.basis_uri AS basis_uri
LIMIT 1
