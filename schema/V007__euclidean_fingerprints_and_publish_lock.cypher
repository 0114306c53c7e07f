// Fingerprints (artifact format 5) are vectors in which every feature is 0 for a channel without that
// behaviour, compared by euclidean similarity 1 / (1 + ||a - b||^2): what all channels share adds
// nothing to a distance, where it dominated a cosine. The vector index ranks by the same similarity.
DROP INDEX block_fingerprint IF EXISTS;
CREATE VECTOR INDEX block_fingerprint_euclidean IF NOT EXISTS
FOR (b:Block) ON b.fingerprint
OPTIONS {indexConfig: {`vector.similarity_function`: 'euclidean'}};
// Publish transactions take a write lock on the one (:PublishLock {id: 'catalog'}) node; unique, so
// that the first publishes of a new catalog, running concurrently, MERGE the same node.
CREATE CONSTRAINT publish_lock_id IF NOT EXISTS FOR (n:PublishLock) REQUIRE n.id IS UNIQUE;
