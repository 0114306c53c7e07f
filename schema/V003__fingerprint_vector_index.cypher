// "Channels like this one" across the whole catalog: an approximate nearest-neighbour index on
// Block.fingerprint (a fixed-length list of floats per channel, from probe data), by cosine.
// The dimension is left to the data: every fingerprint the ingest job writes has the same length.
CREATE VECTOR INDEX block_fingerprint IF NOT EXISTS
FOR (b:Block) ON b.fingerprint
OPTIONS {indexConfig: {`vector.similarity_function`: 'cosine'}};
