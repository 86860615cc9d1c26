#include "cluster/worker_directory.h"

#include <algorithm>
#include <iterator>

namespace gantry::cluster {

std::vector<MembershipChange>
WorkerDirectory::update(const std::vector<WorkerInfo> &live,
                        const std::set<std::string, std::less<>> &skip) {
  std::map<std::string, std::set<Member>, std::less<>> next;
  std::set<std::string> nodes;
  for (const auto &w : live) {
    nodes.insert(w.node_id);
    for (const auto &m : w.models)
      if (!skip.contains(m))
        next[m].insert(Member{w.node_id, w.url, true});
    for (const auto &m : w.available) // a URL listed both ways counts as loaded (set order)
      if (!skip.contains(m))
        next[m].insert(Member{w.node_id, w.url, false});
  }
  std::lock_guard<std::mutex> lk(mu_);
  workers_ = static_cast<int>(nodes.size());
  std::vector<MembershipChange> out;
  // Tracked models first (they may have lost every member), then new ones within the bound.
  for (auto &[model, have] : members_) {
    static const std::set<Member> kNone;
    auto it = next.find(model);
    const std::set<Member> &want = it == next.end() ? kNone : it->second;
    MembershipChange c;
    c.model = model;
    std::set_difference(want.begin(), want.end(), have.begin(), have.end(),
                        std::back_inserter(c.added));
    std::set_difference(have.begin(), have.end(), want.begin(), want.end(),
                        std::back_inserter(c.removed));
    for (const Member &m : want)
      if (auto old = have.find(m); old != have.end() && old->loaded != m.loaded)
        c.updated.push_back(m);
    if (!c.added.empty() || !c.removed.empty() || !c.updated.empty()) {
      have = want;
      out.push_back(std::move(c));
    }
  }
  for (auto &[model, want] : next) {
    if (members_.contains(model))
      continue;
    if (static_cast<int>(members_.size()) >= max_models_) {
      ++models_refused_;
      continue;
    }
    MembershipChange c;
    c.model = model;
    c.added.assign(want.begin(), want.end());
    members_[model] = want;
    out.push_back(std::move(c));
  }
  std::sort(out.begin(), out.end(),
            [](const MembershipChange &a, const MembershipChange &b) { return a.model < b.model; });
  return out;
}

int WorkerDirectory::live_workers(std::string_view model) const {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = members_.find(model);
  return it == members_.end() ? 0 : static_cast<int>(it->second.size());
}

int WorkerDirectory::loaded_workers(std::string_view model) const {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = members_.find(model);
  if (it == members_.end())
    return 0;
  return static_cast<int>(std::count_if(it->second.begin(), it->second.end(),
                                        [](const Member &m) { return m.loaded; }));
}

bool WorkerDirectory::tracks(std::string_view model) const {
  std::lock_guard<std::mutex> lk(mu_);
  return members_.find(model) != members_.end();
}

std::map<std::string, int> WorkerDirectory::counts() const {
  std::lock_guard<std::mutex> lk(mu_);
  std::map<std::string, int> out;
  for (const auto &[model, m] : members_)
    out[model] = static_cast<int>(m.size());
  return out;
}

std::map<std::string, int> WorkerDirectory::loaded_counts() const {
  std::lock_guard<std::mutex> lk(mu_);
  std::map<std::string, int> out;
  for (const auto &[model, m] : members_)
    out[model] = static_cast<int>(
        std::count_if(m.begin(), m.end(), [](const Member &x) { return x.loaded; }));
  return out;
}

int WorkerDirectory::workers() const {
  std::lock_guard<std::mutex> lk(mu_);
  return workers_;
}

uint64_t WorkerDirectory::models_refused() const {
  std::lock_guard<std::mutex> lk(mu_);
  return models_refused_;
}

} // namespace gantry::cluster
