"""Apply a RestorePlan in a TF1 session: what `ckptkit plan` shows is what gets restored."""
from ..errors import PlanError
from ..formats import open_checkpoint
from ..tfcompat import tf


def apply_plan(session, plan, checkpoint):
    """Restore the planned variables of the session's graph from `checkpoint` (any format
    ckptkit reads) with one run of one group of assign ops; each tensor is read once.

    Returns the number of variables restored.
    """
    graph = session.graph
    by_name = {v.op.name: v for v in graph.get_collection(tf.GraphKeys.GLOBAL_VARIABLES)}
    feeds, assigns = {}, []
    with open_checkpoint(checkpoint) as reader, graph.as_default(), \
            tf.name_scope("ckptkit_restore"):
        values = {}
        for item in plan.restore:
            var = by_name.get(item.model)
            if var is None:
                raise PlanError(f"the plan restores {item.model!r}, which this graph does not "
                                "have (was the plan made for another model?)")
            if item.ckpt not in values:
                values[item.ckpt] = reader.read(item.ckpt)
            value = values[item.ckpt]
            if item.offset:
                value = value[..., item.offset:]
            if tuple(value.shape) != tuple(var.shape.as_list()):
                raise PlanError(f"{item.ckpt!r} has shape {list(value.shape)} but "
                                f"{item.model!r} needs {var.shape.as_list()}")
            feed = tf.placeholder(var.dtype.base_dtype, var.shape, name="value")
            feeds[feed] = value
            assigns.append(tf.assign(var, feed, use_locking=False).op)
        session.run(tf.group(*assigns), feed_dict=feeds)
    return len(assigns)
