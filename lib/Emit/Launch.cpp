//===- Launch.cpp - torchrun and Slurm launch scripts ---------------------===//
//
// Both scripts start one torchrun per node with c10d rendezvous and export the
// NCCL settings the plan's placement asks for: what crosses nodes, and what
// crosses the WAN between datacenters (longer timeouts, bigger buffers).
// Site-specific values (HCAs, interfaces) stay commented placeholders: a wrong
// guess there hangs a job, a missing one only slows it.
//
//===----------------------------------------------------------------------===//

#include "EmitInternal.h"

#include <fmt/format.h>

using namespace loom;
using namespace loom::emit;

namespace {
/// "tp=2 pp=2" for the mesh pieces on `level`, or "none".
std::string axesOn(const spec::Plan &plan, const std::string &level) {
  std::string out;
  for (const spec::LogicalAxis &axis : plan.mesh())
    for (const spec::AxisPiece &piece : axis.pieces())
      if (piece.physical() == level)
        out += fmt::format("{}{}={}", out.empty() ? "" : " ", axis.name(), piece.size());
  return out.empty() ? "none" : out;
}

std::string environment(const spec::Plan &plan, const RankMap &map) {
  const spec::Strategy &s = plan.strategy();
  std::string where =
      map.cellDc.empty()
          ? fmt::format("{} datacenter(s) x {} node(s)", map.dcs, map.nodesPerDc)
          : fmt::format("{} datacenters of different sizes ({} cells of {} node(s))",
                        map.datacenters(), map.dcs, map.nodesPerDc);
  std::string out = fmt::format("# placement: {} x {} GPU(s)\n#   within a node: {}\n"
                                "#   across nodes:  {}\n",
                                where, map.gpusPerNode, axesOn(plan, "gpu"), axesOn(plan, "node"));
  if (map.datacenters() > 1) {
    std::string across;
    for (const std::string &dim : map.acrossDatacenters())
      across += (across.empty() ? "" : " ") + dim;
    out += fmt::format("#   across the WAN between datacenters: {}\n",
                       across.empty() ? "none" : across);
  }
  out += "export NCCL_DEBUG=${NCCL_DEBUG:-WARN}\n";
  if (s.sequence_parallel() || s.tp_comm_overlap())
    out += "# sequence-parallel communication overlaps GEMMs only on one CUDA stream queue\n"
           "export CUDA_DEVICE_MAX_CONNECTIONS=1\n";
  if (map.dcs * map.nodesPerDc > 1) {
    out += "# the node's InfiniBand/RoCE adapters (`ibv_devinfo` lists them):\n"
           "# export NCCL_IB_HCA=mlx5_0,mlx5_1,mlx5_2,mlx5_3,mlx5_4,mlx5_5,mlx5_6,mlx5_7\n"
           "# the interface for bootstrap and TCP traffic:\n"
           "# export NCCL_SOCKET_IFNAME=<interface, e.g. eth0>\n"
           "# rail-optimized fabrics: keep each ring on one NIC rail\n"
           "# export NCCL_CROSS_NIC=0\n";
    for (const spec::LogicalAxis &axis : plan.mesh()) {
      bool inner = axis.name() == "tp" || axis.name() == "cp" || axis.name() == "ep";
      int64_t size = 1, outside = 1;
      for (const spec::AxisPiece &piece : axis.pieces()) {
        size *= piece.size();
        if (piece.physical() != "gpu")
          outside *= piece.size();
      }
      if (inner && outside > 1)
        out += fmt::format("# {}={} spans {} nodes: its collectives run on the fabric every "
                           "layer\n", axis.name(), size, outside);
    }
  }
  if (map.datacenters() > 1)
    out += "# cross-datacenter: long round trips need longer IB timeouts and bigger buffers\n"
           "export NCCL_IB_TIMEOUT=${NCCL_IB_TIMEOUT:-22}\n"
           "export NCCL_IB_RETRY_CNT=${NCCL_IB_RETRY_CNT:-13}\n"
           "export NCCL_BUFFSIZE=${NCCL_BUFFSIZE:-16777216}\n"
           "# over TCP instead of IB, more sockets per peer fill the long pipe:\n"
           "# export NCCL_SOCKET_NTHREADS=4 NCCL_NSOCKS_PERTHREAD=4\n";
  return out;
}

std::string torchrunArgs(const RankMap &map, const std::string &nodeRank,
                         const std::string &endpoint, const std::string &rdzvId) {
  // Underscored flags: torch 1.x's torchrun knows only these, 2.x takes both.
  return fmt::format("torchrun --nnodes {} --nproc_per_node {} --node_rank {} "
                     "--rdzv_backend c10d --rdzv_endpoint {} --rdzv_id {}",
                     map.dcs * map.nodesPerDc, map.gpusPerNode, nodeRank, endpoint, rdzvId);
}

void checkHosts(const LaunchOptions &launch, int64_t nodes) {
  if (!launch.hosts.empty() && int64_t(launch.hosts.size()) != nodes)
    throw EmitError(fmt::format("--nodes-file lists {} host(s), but the plan runs on {} "
                                "node(s)", launch.hosts.size(), nodes),
                    "list one host per line, in node order");
}
} // namespace

std::string loom::emit::emitTorchrun(const spec::Plan &plan, const Provenance &from,
                                     const LaunchOptions &launch) {
  RankMap map = rankMap(plan);
  int64_t nodes = map.dcs * map.nodesPerDc;
  checkHosts(launch, nodes);
  std::string master = !launch.masterAddr.empty() ? launch.masterAddr
                       : !launch.hosts.empty()    ? launch.hosts.front()
                                                  : "";
  std::string out = "#!/bin/bash\n" + detail::header("# ", "torchrun", plan, from);
  out += fmt::format("# run on every node: NODE_RANK=<0..{}> {}{}\n", nodes - 1,
                     "bash THIS_FILE [training args]",
                     launch.hosts.empty() ? "" : " (or leave NODE_RANK unset: the host name picks it)");
  out += "set -euo pipefail\n";
  out += environment(plan, map);
  if (master.empty())
    out += "MASTER_ADDR=${MASTER_ADDR:?set MASTER_ADDR to the address of node 0}\n";
  else
    out += fmt::format("MASTER_ADDR=${{MASTER_ADDR:-{}}}\n", master);
  out += fmt::format("MASTER_PORT=${{MASTER_PORT:-{}}}\nexport MASTER_ADDR MASTER_PORT\n",
                     launch.port);
  if (!launch.hosts.empty()) {
    out += "HOSTS=(";
    for (size_t i = 0; i < launch.hosts.size(); ++i)
      out += (i ? " " : "") + launch.hosts[i];
    out += ")\n"
           "if [ -z \"${NODE_RANK:-}\" ]; then\n"
           "  for i in \"${!HOSTS[@]}\"; do\n"
           "    if [ \"${HOSTS[$i]}\" = \"$(hostname)\" ] || [ \"${HOSTS[$i]}\" = \"$(hostname -s)\" ]; then NODE_RANK=$i; fi\n"
           "  done\n"
           "fi\n";
  }
  // torch 1.13 on Python 3.11 (Debian 12's python3-torch): Std.from_str
  // looks "0", the default of --redirects and --tee, up by iterating the
  // IntFlag Std, which 3.11 no longer yields its zero member for, so it gets
  // None and the agent stops in to_map before starting a worker. A mapping
  // that names only a local rank the node lacks means the same (no
  // redirection for every worker) and parses; the mapping syntax takes one
  // digit, so it is used only below 10 GPUs per node.
  out += "TORCHRUN=${TORCHRUN:-torchrun}  # or e.g. \"python3 -m torch.distributed.run\"\n";
  if (map.gpusPerNode < 10)
    out += fmt::format(
        "if \"${{PYTHON:-python3}}\" -c 'import sys, torch; sys.exit(not (sys.version_info >= (3, 11) and "
        "torch.__version__.startswith(\"1.\")))' 2>/dev/null; then\n"
        "  TORCHRUN=\"$TORCHRUN --redirects 9:0 --tee 9:0\"  # torch 1.x on Python 3.11: see "
        "loom docs/emit.md\nfi\n");
  out += "case \"${NODE_RANK:?set NODE_RANK to the index of this node}\" in\n";
  for (int64_t node = 0; node < nodes; ++node)
    out += fmt::format("{}) exec $TORCHRUN {} {} \"$@\" ;;{}\n", node,
                       torchrunArgs(map, std::to_string(node), "\"$MASTER_ADDR:$MASTER_PORT\"",
                                    "\"${RDZV_ID:-loom}\"").substr(std::string("torchrun ").size()),
                       launch.script,
                       launch.hosts.empty() ? "" : "  # " + launch.hosts[node]);
  out += fmt::format("*) echo \"NODE_RANK must be 0..{}\" >&2; exit 2 ;;\nesac\n", nodes - 1);
  return out;
}

std::string loom::emit::emitSlurm(const spec::Plan &plan, const Provenance &from,
                                  const LaunchOptions &launch) {
  RankMap map = rankMap(plan);
  int64_t nodes = map.dcs * map.nodesPerDc;
  checkHosts(launch, nodes);
  std::string out = "#!/bin/bash\n";
  // sbatch reads #SBATCH lines only before the first command, so they come first.
  out += fmt::format("#SBATCH --job-name=loom-{}\n", plan.model().empty() ? "plan" : plan.model());
  out += fmt::format("#SBATCH --nodes={}\n#SBATCH --ntasks-per-node=1\n"
                     "#SBATCH --gpus-per-node={}\n#SBATCH --exclusive\n",
                     nodes, map.gpusPerNode);
  if (!launch.hosts.empty()) {
    std::string list;
    for (const std::string &host : launch.hosts)
      list += (list.empty() ? "" : ",") + host;
    out += fmt::format("#SBATCH --nodelist={}\n", list);
  }
  out += detail::header("# ", "slurm", plan, from);
  out += "# submit: sbatch THIS_FILE [training args]\n";
  out += "set -euo pipefail\n";
  out += environment(plan, map);
  if (launch.masterAddr.empty())
    out += "MASTER_ADDR=$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1)\n";
  else
    out += fmt::format("MASTER_ADDR={}\n", launch.masterAddr);
  out += fmt::format("MASTER_PORT={}\nexport MASTER_ADDR MASTER_PORT\n", launch.port);
  out += fmt::format("srun --kill-on-bad-exit=1 bash -c '{} {} \"$@\"' _ \"$@\"\n",
                     torchrunArgs(map, "\"$SLURM_NODEID\"", "\"$MASTER_ADDR:$MASTER_PORT\"",
                                  "\"$SLURM_JOB_ID\""),
                     launch.script);
  return out;
}
