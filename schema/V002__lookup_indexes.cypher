// Range indexes for the lookups the query library makes: checkpoints of a model in step order,
// complete checkpoints only, the blocks of a checkpoint by layer, the subspaces of a block by
// role, slices by name, and the per-slice scores on relationships.
CREATE INDEX checkpoint_model_step IF NOT EXISTS FOR (n:Checkpoint) ON (n.model_id, n.step);
CREATE INDEX checkpoint_status IF NOT EXISTS FOR (n:Checkpoint) ON (n.status);
CREATE INDEX block_checkpoint_layer IF NOT EXISTS FOR (n:Block) ON (n.checkpoint_id, n.layer);
CREATE INDEX block_name IF NOT EXISTS FOR (n:Block) ON (n.name);
CREATE INDEX subspace_block_role IF NOT EXISTS FOR (n:Subspace) ON (n.block_id, n.role);
CREATE INDEX data_slice_name IF NOT EXISTS FOR (n:DataSlice) ON (n.name);
CREATE INDEX feeds_attribution IF NOT EXISTS FOR ()-[r:FEEDS]-() ON (r.attribution);
CREATE INDEX feeds_weight IF NOT EXISTS FOR ()-[r:FEEDS]-() ON (r.weight);
CREATE INDEX flows_on_slice_attribution IF NOT EXISTS FOR ()-[r:FLOWS_ON]-() ON (r.slice, r.attribution);
CREATE INDEX active_on_attribution IF NOT EXISTS FOR ()-[r:ACTIVE_ON]-() ON (r.attribution);
