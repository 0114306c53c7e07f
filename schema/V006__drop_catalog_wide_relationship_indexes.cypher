// Every query reads one checkpoint at a time and reaches its relationships from that checkpoint's
// blocks. Range indexes on relationship properties (FEEDS weight and attribution, FLOWS_ON slice and
// attribution, ACTIVE_ON attribution) span the whole catalog: the planner used them to seek every
// FLOWS_ON of a slice in every checkpoint and join, so `circuit` grew with the catalog (2.1x from 1
// to 2 GPT-2-small checkpoints), and every relationship the loader wrote updated them. Dropped.
DROP INDEX flows_on_slice_attribution IF EXISTS;
DROP INDEX feeds_attribution IF EXISTS;
DROP INDEX feeds_weight IF EXISTS;
DROP INDEX active_on_attribution IF EXISTS;
