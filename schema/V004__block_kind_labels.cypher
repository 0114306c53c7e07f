// Every Block also carries its kind as a label (AttentionHead, MLP, Embedding, Unembedding), so
// Cypher can match `(:AttentionHead)` and Neo4j Browser's stylesheet can colour blocks by kind.
// The loader labels new blocks; these statements label the blocks of catalogs loaded before.
MATCH (b:Block {kind: 'attn_head'}) SET b:AttentionHead;
MATCH (b:Block {kind: 'mlp'}) SET b:MLP;
MATCH (b:Block) WHERE b.kind IN ['embed', 'pos_embed'] SET b:Embedding;
MATCH (b:Block {kind: 'unembed'}) SET b:Unembedding;
