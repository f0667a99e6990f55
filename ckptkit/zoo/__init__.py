"""TF-free facts about nets and published checkpoints: nets.py holds one NetRecord per net
(the nets factory), pretrained.py the registry of published checkpoints (registry.json,
package data), each entry a NetRecord plus what its checkpoint differs in."""
