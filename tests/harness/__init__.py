"""Helpers shared by the tests and the benchmarks (none of them is a test).

Import them from the repository root as ``tests.harness.<module>``; a helper run as a
process is started as ``python -m tests.harness.<module>`` with the repository root on
its ``PYTHONPATH`` (:mod:`tests.harness.processes`), so ``"module:function"`` names
such as ``"tests.harness.clash_resolvers:resolve_first"`` import in every node process.

Waiting and processes:

* ``polling`` - ``wait_until`` / ``wait_for`` / ``hold``: conditions polled with a
  deadline, never a bare sleep.
* ``processes`` - the repository root, a child's environment and command line for
  ``python -m``, and whether an OS process lives.

Node processes (each one a program driven over stdin/stdout):

* ``node_driver`` - a dist node answering JSON ops (the ops of ``registry_ops``,
  ``singleton_ops``, ``scheduler_ops`` and ``bench_ops`` included); optionally booted
  with a Singleton, a Scheduler, the seed recipe's tree, DnsA discovery or TLS.
* ``node_process`` - ``NodeProc`` (a ``node_driver`` process started and talked to),
  ``mesh`` and ``free_port``.
* ``pool_node_driver`` - a node for the task pool tests, its tasks and a fake holder.
* ``quorum_node_driver`` - a node running the Quorum system actor, driven the same way.
* ``shell_target_node`` - the node the shell tests inspect (a Scheduler and an ``app``
  supervisor), served by ``node_driver``.
* ``nested_tree_node`` - a node with a two-level supervision tree that prints its pids
  (the no-orphan and Thespian-door tests).

What node processes run or import by name:

* ``registry_ops``, ``singleton_ops``, ``scheduler_ops``, ``bench_ops`` - op sets of
  ``node_driver`` (global registry and locks; Singleton and its test child; Scheduler;
  the benchmarks' timing loops).
* ``clash_resolvers`` - registry conflict resolvers that log each call.
* ``scheduler_tasks`` - tasks the scheduler tests schedule.
* ``otpkit_run_app`` - an application tree for ``otpkit run``.

Network namespaces:

* ``netns_cluster`` - a cluster of ``node_driver`` nodes in network namespaces with a
  real dnsmasq and nftables cuts.
* ``evil_pickle_probe`` - sends a file-creating pickle to given ports (run in a
  namespace by the Thespian-door test).
"""
