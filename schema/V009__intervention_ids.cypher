// Saved interventions (circuit-atlas steer --save) have a unique id: a checkpoint, a spec and a seed.
CREATE CONSTRAINT intervention_id IF NOT EXISTS FOR (n:Intervention) REQUIRE n.id IS UNIQUE;
