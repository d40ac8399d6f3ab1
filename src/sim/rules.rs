//! The follow rules: [`SimState::follow`] decides a follow request's answer by the rules the
//! `sim` module's documentation lists, in that order, applied in one critical section per
//! request (under the user's lock) so the figures are exact; [`SimState::leave`] releases the
//! request once it is answered.

use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::faults::{self, FaultDecision, FaultKind};
use super::limits::{Day, count_in_day};
use super::problems::{self, Problem};
use super::state::{Edge, SimState, UserState, lock};

/// The target of a follow request, once the body passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowRequest {
    /// The path's `:id`, validated.
    pub path_id: String,
    pub target: String,
}

/// The window figures sent as `x-rate-limit-*` (or `x-user-limit-24hour-*`,
/// `x-app-limit-24hour-*`) headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateHeaders {
    pub limit: u32,
    pub remaining: u64,
    /// Epoch seconds of the window's end, rounded up.
    pub reset: u64,
}

/// The answer decided for an authenticated follow request.
#[derive(Debug, Clone)]
pub enum Answer {
    Follow {
        following: bool,
        pending_follow: bool,
    },
    Refused(Problem),
    ServerError {
        status: u16,
    },
    Errors200,
}

impl Answer {
    fn status(&self) -> u16 {
        match self {
            Answer::Follow { .. } | Answer::Errors200 => 200,
            Answer::Refused(problem) => problem.status.as_u16(),
            Answer::ServerError { status } => *status,
        }
    }
}

/// Everything the handler needs to build the response, decided under the user's lock.
#[derive(Debug, Clone)]
pub struct FollowOutcome {
    pub answer: Answer,
    /// `None` when the simulator sends no rate-limit headers.
    pub rate: Option<RateHeaders>,
    /// The 24-hour limits' figures, when configured and headers are on.
    pub user_24h: Option<RateHeaders>,
    pub app_24h: Option<RateHeaders>,
    /// The user's own answer delay, on top of any injected one.
    pub user_delay: Option<Duration>,
    /// The target being handled, to release with [`SimState::leave`].
    pub target: Option<String>,
    /// `Drop` and `Malformed` spoil `answer` when it is sent; `delay` delays it.
    pub fault: FaultDecision,
    /// Counted in the user's in-flight figures, to release with [`SimState::leave`]: false
    /// for a 402, which X refuses before anything else counts it.
    pub counted: bool,
}

impl SimState {
    /// Decides the answer to a follow request authenticated as `user_id`, counts it in the
    /// user's window and figures, and applies the follow. `request` is the validated path and
    /// body, or the 400 they earned.
    pub fn follow(&self, user_id: &str, request: Result<FollowRequest, Problem>) -> FollowOutcome {
        let faults = self.faults();
        let usage_cap = *self
            .usage_capped
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let app_forbidden = self.app_forbidden.load(Ordering::SeqCst);
        let limit = self.config.window_requests;
        let now = Instant::now();

        let user = self.user(user_id);
        let mut user = lock(&user);
        let user = &mut *user;
        if let Ok(request) = &request {
            match user.requests_by_target.get_mut(&request.target) {
                Some(n) => *n += 1,
                None => {
                    user.requests_by_target.insert(request.target.clone(), 1);
                }
            }
        }
        // X's billing comes before everything but the credentials: a 402 is not counted in
        // the window nor in `requests`.
        let Some(credit) = self.reserve_credit() else {
            self.payment_required.fetch_add(1, Ordering::Relaxed);
            return FollowOutcome {
                answer: Answer::Refused(problems::credits_depleted()),
                rate: None,
                user_24h: None,
                app_24h: None,
                user_delay: user.answer_delay,
                target: None,
                fault: FaultDecision::default(),
                counted: false,
            };
        };
        user.seq += 1;
        user.stats.requests += 1;

        // Every authenticated request counts in the window, whatever its answer.
        let window = user.window(now, self.config.window);
        window.used += 1;
        window.received += 1;
        let (used, received, reset) = (window.used, window.received, window.reset_epoch);
        user.stats.max_window_usage = user.stats.max_window_usage.max(used);
        user.stats.max_requests_in_window = user.stats.max_requests_in_window.max(received);
        let headers_on = self.rate_limit_headers.load(Ordering::SeqCst);
        let rate = headers_on.then_some(RateHeaders {
            limit,
            remaining: u64::from(limit).saturating_sub(used),
            reset,
        });
        let (user_24h, user_day_over) = match self.config.user_24h_limit {
            Some(day) => {
                let (headers, over) = count_in_day(&mut user.day_requests, day, now);
                (Some(headers), over)
            }
            None => (None, false),
        };
        let (app_24h, app_day_over) = match self.config.app_24h_limit {
            Some(day) => {
                let mut app_day = self.app_day.lock().unwrap_or_else(PoisonError::into_inner);
                let (headers, over) = count_in_day(&mut app_day, day, now);
                (Some(headers), over)
            }
            None => (None, false),
        };
        let (user_24h, app_24h) = (
            user_24h.filter(|_| headers_on),
            app_24h.filter(|_| headers_on),
        );
        // Being handled from now until `leave`: in flight for this user, and for this target.
        user.in_flight += 1;
        user.stats.max_in_flight = user.stats.max_in_flight.max(user.in_flight);
        let target = request.as_ref().ok().map(|r| r.target.clone());
        if let Some(target) = &target {
            let same = user.targets_in_flight.entry(target.clone()).or_default();
            if *same > 0 {
                user.stats.same_target_overlaps += 1;
            }
            *same += 1;
        }
        let user_delay = user.answer_delay;

        let answer = if app_forbidden {
            user.stats.app_forbidden += 1;
            Some(Answer::Refused(problems::client_forbidden()))
        } else if let Some(cap) = usage_cap.or(user.usage_cap) {
            user.stats.usage_capped += 1;
            Some(Answer::Refused(problems::usage_capped(cap)))
        } else if used > u64::from(limit) {
            user.stats.rate_limited += 1;
            Some(Answer::Refused(problems::too_many_requests()))
        } else if user_day_over {
            user.stats.user_24h_limited += 1;
            Some(Answer::Refused(problems::too_many_requests()))
        } else if app_day_over {
            user.stats.app_24h_limited += 1;
            Some(Answer::Refused(problems::too_many_requests()))
        } else {
            None
        };
        // Refusals before this point are never faulted, so 429s and the app-wide stops stay
        // clean signals.
        let (answer, fault) = match answer {
            Some(answer) => (answer, FaultDecision::default()),
            None => {
                let mut fault = faults::decide(&faults, user_id, user.seq);
                let answer = match fault.kind {
                    Some(FaultKind::ServerError { status }) => {
                        user.stats.faults.server_errors += 1;
                        Answer::ServerError { status }
                    }
                    Some(FaultKind::Errors200) => {
                        user.stats.faults.errors_200 += 1;
                        Answer::Errors200
                    }
                    Some(FaultKind::AppliedThenServerError { status }) => {
                        match self.apply(user, user_id, request, now) {
                            // Applied as a 200 would be; only the answer is a 5xx.
                            Answer::Follow { .. } => {
                                user.stats.faults.applied_then_failed += 1;
                                Answer::ServerError { status }
                            }
                            // Nothing was applied, so there is nothing for the 5xx to hide.
                            refused => {
                                fault.kind = None;
                                refused
                            }
                        }
                    }
                    _ => self.apply(user, user_id, request, now),
                };
                (answer, fault)
            }
        };

        // Acted on: the rules ran to a success (a follow made, pending or already there),
        // whatever is then sent (200, a spoiled body, nothing, or the applied-then-5xx).
        let acted_on = matches!(answer, Answer::Follow { .. })
            || matches!(fault.kind, Some(FaultKind::AppliedThenServerError { .. }));
        self.settle_credit(credit, acted_on);
        if fault.delay.is_some() {
            user.stats.faults.delayed += 1;
        }
        match fault.kind {
            Some(FaultKind::Drop) => user.stats.faults.dropped += 1,
            Some(FaultKind::Malformed { .. }) => {
                user.stats.faults.malformed += 1;
                user.stats.count_status(answer.status());
            }
            _ => user.stats.count_status(answer.status()),
        }
        FollowOutcome {
            answer,
            rate,
            user_24h,
            app_24h,
            user_delay,
            target,
            fault,
            counted: true,
        }
    }

    /// A request counted by [`SimState::follow`] is no longer being handled.
    pub fn leave(&self, user_id: &str, target: Option<&str>) {
        let user = self.user(user_id);
        let mut user = lock(&user);
        user.in_flight = user.in_flight.saturating_sub(1);
        if let Some(target) = target
            && let Some(same) = user.targets_in_flight.get_mut(target)
        {
            *same = same.saturating_sub(1);
            if *same == 0 {
                user.targets_in_flight.remove(target);
            }
        }
    }

    /// The rules past the window: who may act, the target, the graph, the daily cap.
    fn apply(
        &self,
        user: &mut UserState,
        user_id: &str,
        request: Result<FollowRequest, Problem>,
        now: Instant,
    ) -> Answer {
        let request = match request {
            Ok(request) => request,
            Err(problem) => return Answer::Refused(problem),
        };
        if request.path_id != user_id {
            return Answer::Refused(problems::not_this_user(&request.path_id));
        }
        if request.target == user_id {
            return Answer::Refused(problems::invalid_request(
                "target_user_id",
                &request.target,
                "You cannot follow yourself.",
            ));
        }
        let rules = &self.config.targets;
        if rules.is_unknown(&request.target) {
            return Answer::Refused(problems::target_not_found(&request.target));
        }
        if rules.invalid_ids.contains(&request.target) {
            return Answer::Refused(problems::invalid_request(
                "target_user_id",
                &request.target,
                &format!(
                    "The `target_user_id` query parameter value [{}] is not valid",
                    request.target
                ),
            ));
        }
        if rules.blocking_ids.contains(&request.target) {
            return Answer::Refused(problems::blocked_by_target());
        }
        if let Some(edge) = user.graph.get(&request.target) {
            user.stats.repeated += 1;
            return Answer::Follow {
                following: *edge == Edge::Following,
                pending_follow: *edge == Edge::Pending,
            };
        }
        let length = self.config.daily_window;
        let user_day = match self.config.daily_cap {
            Some(cap) => {
                let day = Day::current(user.day, now, length);
                if day.follows >= cap {
                    user.day = Some(day);
                    user.stats.daily_capped += 1;
                    return Answer::Refused(problems::daily_cap());
                }
                Some(day)
            }
            None => None,
        };
        {
            let mut app = self
                .app_follows
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(cap) = self.config.app_daily_cap {
                let day = Day::current(app.day, now, length);
                if day.follows >= cap {
                    // The user's own day is left as it was: no follow was made.
                    app.day = Some(day);
                    app.capped += 1;
                    return Answer::Refused(problems::daily_cap());
                }
                app.day = Some(Day {
                    follows: day.follows + 1,
                    ..day
                });
            }
            app.recent.record(length);
        }
        if let Some(day) = user_day {
            user.day = Some(Day {
                follows: day.follows + 1,
                ..day
            });
        }
        user.stats.max_follows_in_day = user.recent_follows.record(length);
        if rules.is_protected(&request.target) {
            user.graph.insert(request.target, Edge::Pending);
            user.stats.pending += 1;
            Answer::Follow {
                following: false,
                pending_follow: true,
            }
        } else {
            user.graph.insert(request.target, Edge::Following);
            user.stats.follows += 1;
            Answer::Follow {
                following: true,
                pending_follow: false,
            }
        }
    }
}
