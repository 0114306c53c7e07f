// Every Block carries `order`, its position in the channel order (the forward order: embeddings,
// then per layer its heads by index and its MLP, then the unembedding), and every query sorts
// channels by it. The loader writes it; this backfills blocks loaded before, where it is null.
MATCH (c:Checkpoint)-[:HAS_BLOCK]->(b:Block) WHERE b.order IS NULL
WITH c, b ORDER BY b.layer, CASE b.kind WHEN 'embed' THEN 0 WHEN 'pos_embed' THEN 1 WHEN 'attn_head' THEN 2 WHEN 'mlp' THEN 3 ELSE 4 END, b.head
WITH c, collect(b) AS blocks
UNWIND range(0, size(blocks) - 1) AS i
WITH blocks[i] AS b, i
SET b.order = i;
