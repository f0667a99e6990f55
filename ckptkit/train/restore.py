"""The restore plan of a model, and applying it in a TF1 session: `ckptkit plan --net` and
every stage of `finetune` make their plan with plan_model, so what `plan` shows is what gets
restored."""
from ..errors import PlanError
from ..paths import open_checkpoint
from ..plan import CLASSIFIER, plan_checkpoint
from ..zoo import pretrained
from ..tfcompat import tf


def plan_model(checkpoint, model, options):
    """The checked RestorePlan (plan.plan_for) of `model` (nets.Model) from `checkpoint`
    under `options` (plan.RestoreOptions). The record drives the defaults: its label offset
    drops a background class, and under a new head its classifier scopes (a pretrained
    entry's `exclude`, for `pretrained:NAME` of this net) stay out, said in a note."""
    classifier = () if model.keep_head else classifier_scopes(checkpoint, model)
    plan = plan_checkpoint(checkpoint, model.variables(), options,
                           label_offset=model.record.label_offset, classifier=classifier)
    if any(reason == CLASSIFIER for _, reason in plan.dropped):
        net = model.record.name.rpartition(":")[2]      # a user's net: its function's name
        plan.notes.append(
            f"{net}'s classifier ({', '.join(classifier)}) is not restored: a new "
            f"{model.num_classes}-class head replaces it (--keep-head keeps it)")
    return plan


def classifier_scopes(checkpoint, model):
    """The checkpoint scopes a new head replaces: the pretrained entry's for
    `pretrained:NAME` of this net, else the net record's."""
    found = pretrained.named_entry(checkpoint)
    if found is not None and found.net == model.record.name:
        return found.exclude_scopes
    return model.record.classifier_scopes


def apply_plan(session, plan, checkpoint, entries=None):
    """Restore the planned variables of the session's graph from `checkpoint` (any format
    ckptkit reads) in one session run; each tensor is read once. `entries`: those of the
    plan's restore entries to apply (default: all; features mode copies the backbone's into
    its checkpoints instead of building it).

    A variable is set by feeding its own initializer's value (what TF1's Variable.load does),
    so restoring adds no ops to the graph; variables whose initializer is not one assignment
    (tf.distribute mirrors) get a placeholder and an assign op.
    Returns the number of variables restored.
    """
    entries = plan.restore if entries is None else entries
    if not entries:
        return 0
    graph = session.graph
    by_name = {v.op.name: v for v in graph.get_collection(tf.GraphKeys.GLOBAL_VARIABLES)}
    feeds, fetches = {}, []
    with open_checkpoint(checkpoint) as reader:
        values = {}
        for item in entries:
            var = by_name.get(item.model)
            if var is None:
                raise PlanError(f"the plan restores {item.model!r}, which this graph does not "
                                "have (was the plan made for another model?)")
            if item.ckpt not in values:
                values[item.ckpt] = reader.read(item.ckpt)
            value = item.sliced(values[item.ckpt])
            if tuple(value.shape) != tuple(var.shape.as_list()):
                raise PlanError(f"{item.ckpt!r} has shape {list(value.shape)} but "
                                f"{item.model!r} needs {var.shape.as_list()}")
            op, target = _setter(graph, var)
            feeds[target] = value
            fetches.append(op)
    session.run(fetches, feed_dict=feeds)
    return len(fetches)


def _setter(graph, var):
    """(op, tensor): running op with tensor fed sets var."""
    op = getattr(var, "initializer", None)
    if op is not None and op.type in ("Assign", "AssignVariableOp") and len(op.inputs) == 2:
        return op, op.inputs[1]
    with graph.as_default(), tf.name_scope("ckptkit_restore"):
        value = tf.placeholder(var.dtype.base_dtype, var.shape, name="value")
        return var.assign(value, read_value=False), value
