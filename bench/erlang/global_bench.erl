%% Erlang/OTP peer of otpkit's registry benchmarks: `global` measured on 3 nodes on
%% loopback. Compiled and driven by bench/_erlang_peer.py; every node is started by
%% it as `erl -noshell -name X@127.0.0.1 ... -eval 'global_bench:F(...)'` and talks
%% back only through files in the run's directory (Dir):
%%
%%   <node>.ready   the node is up (and, where it applies, its side is set up)
%%   result         the measurements of latency/4 and heal_main/5 (text, see below)
%%   error          why a measuring node gave up (then it halts with status 1)
%%   <node>.hl      failover log of one node, one line per event:
%%                    start                   a new incarnation of the node
%%                    win <os:system_time ns> this node's contender holds `single`
%%                    wait <holder node>      it lost and monitors the holder
%%
%% Times inside one VM are erlang:monotonic_time; the failover win time is
%% os:system_time(nanosecond), the OS wall clock that Python's time.time() reads.
-module(global_bench).

-export([idle/2, latency/4, highlander/2, heal_side/3, heal_main/5]).
-export([block/0, snapshot/0, snapshot_of/1, full_snapshot/0, full_snapshot_of/1]).

-define(CONNECT_TIMEOUT_MS, 30000).

%% ------------------------------------------------------------------ common

ready(Dir) ->
    ok = file:write_file(filename:join(Dir, atom_to_list(node()) ++ ".ready"), "ready").

block() ->
    receive stop -> ok end.

%% Connect to every node of Peers, retrying while they boot; bounded.
connect(Peers) ->
    Deadline = erlang:monotonic_time(millisecond) + ?CONNECT_TIMEOUT_MS,
    lists:foreach(fun(P) -> connect(P, Deadline) end, Peers).

connect(Peer, Deadline) ->
    case net_kernel:connect_node(Peer) of
        true ->
            ok;
        _ ->
            case erlang:monotonic_time(millisecond) > Deadline of
                true -> exit({cannot_connect, Peer});
                false -> timer:sleep(20), connect(Peer, Deadline)
            end
    end.

%% Run a measurement, write its result (or why it failed) and halt.
measure(Dir, Fun) ->
    try Fun() of
        Lines ->
            ok = file:write_file(filename:join(Dir, "result.tmp"), Lines),
            ok = file:rename(filename:join(Dir, "result.tmp"), filename:join(Dir, "result")),
            halt(0)
    catch
        Class:Reason:Stack ->
            Text = io_lib:format("~p:~p~n~p~n", [Class, Reason, Stack]),
            _ = file:write_file(filename:join(Dir, "error"), Text),
            halt(1)
    end.

line(Key, Values) ->
    [Key | [[" ", integer_to_list(V)] || V <- Values]] ++ ["\n"].

ns(Native) ->
    erlang:convert_time_unit(Native, native, nanosecond).

%% A node that only has to exist (the peers of latency/4, side C of a heal).
idle(Dir, Peers) ->
    connect(Peers),
    ok = global:sync(),
    ready(Dir),
    block().

%% ------------------------------------------------------------------ latency

%% On node A: register a name for a pid living on node B (then unregister), Runs
%% times after 20 unmeasured rounds; then, with the name registered, Runs samples of
%% Loop back-to-back global:whereis_name/1 calls from this process.
%% result: "register_ns T1 ..." and "whereis_loop_ns T1 ..." (one total per sample)
latency(Dir, [B | _] = Peers, Runs, Loop) ->
    measure(Dir, fun() ->
        connect(Peers),
        ok = global:sync(),
        Pid = spawn(B, ?MODULE, block, []),
        Name = otpkit_bench_latency,
        _ = [register_once(Name, Pid) || _ <- lists:seq(1, 20)],
        Register = [register_once(Name, Pid) || _ <- lists:seq(1, Runs)],
        yes = global:register_name(Name, Pid),
        _ = whereis_sample(Name, Pid, Loop),
        Whereis = [whereis_sample(Name, Pid, Loop) || _ <- lists:seq(1, Runs)],
        _ = global:unregister_name(Name),
        Pid ! stop,
        [line("register_ns", Register), line("whereis_loop_ns", Whereis),
         ["otp ", erlang:system_info(otp_release), "\n"]]
    end).

register_once(Name, Pid) ->
    T0 = erlang:monotonic_time(),
    yes = global:register_name(Name, Pid),
    T1 = erlang:monotonic_time(),
    _ = global:unregister_name(Name),
    ns(T1 - T0).

whereis_sample(Name, Pid, N) ->
    T0 = erlang:monotonic_time(),
    ok = whereis_loop(Name, Pid, N),
    ns(erlang:monotonic_time() - T0).

whereis_loop(_Name, _Pid, 0) -> ok;
whereis_loop(Name, Pid, N) ->
    Pid = global:whereis_name(Name),
    whereis_loop(Name, Pid, N - 1).

%% ------------------------------------------------------------------ failover

%% Highlander: a contender tries to register `single`; if it loses it monitors the
%% holder and tries again on 'DOWN'. One contender per node.
highlander(Dir, Peers) ->
    Log = filename:join(Dir, atom_to_list(node()) ++ ".hl"),
    note(Log, "start"),
    connect(Peers),
    ok = global:sync(),
    spawn(fun() -> contend(Log, none) end),
    ready(Dir),
    block().

contend(Log, Noted) ->
    case global:register_name(single, self()) of
        yes ->
            T = os:system_time(nanosecond),
            note(Log, ["win ", integer_to_list(T)]),
            block();
        no ->
            case global:whereis_name(single) of
                undefined ->
                    contend(Log, Noted);
                Holder ->
                    Ref = erlang:monitor(process, Holder),
                    %% while a dead holder is still registered (its node's 'DOWN' came
                    %% before global's nodedown cleanup) this loops: note it once
                    Noted1 = case Holder of
                                 Noted -> Noted;
                                 _ -> note(Log, ["wait ", atom_to_list(node(Holder))]), Holder
                             end,
                    receive {'DOWN', Ref, process, _, _} -> contend(Log, Noted1) end
            end
    end.

note(Log, Line) ->
    ok = file:write_file(Log, [Line, "\n"], [append]).

%% ------------------------------------------------------------------ heal

%% Side {B, C}, on B: connect to C, register Names names for pids on B, then say ready.
heal_side(Dir, C, Names) ->
    connect([C]),
    ok = global:sync(),
    register_names(Names),
    ok = global:sync(),
    Names = length(rpc:call(C, global, registered_names, [])),
    ready(Dir),
    block().

%% Side {A}, on A: wait for B's side, register the same Names names for pids on A,
%% connect to B and poll until A, B and C (C read through B, so the poll opens no
%% connection) each hold Names names, all three the same name -> pid map (heal_ns), and
%% until A is connected to both (mesh_ns). result: "heal_ns T", "connect_ns T" (the
%% connect_node call), "mesh_ns T", "polls P".
heal_main(Dir, B, C, Names, TimeoutMs) ->
    measure(Dir, fun() ->
        wait_file(filename:join(Dir, atom_to_list(B) ++ ".ready"), TimeoutMs),
        register_names(Names),
        Names = length(global:registered_names()),
        [] = nodes(),
        T0 = erlang:monotonic_time(),
        true = net_kernel:connect_node(B),
        Tc = erlang:monotonic_time(),
        Deadline = erlang:monotonic_time(millisecond) + TimeoutMs,
        {T1, Tm, Polls} = poll_healed(B, C, Names, Deadline, 1, undefined, undefined),
        [line("heal_ns", [ns(T1 - T0)]), line("connect_ns", [ns(Tc - T0)]),
         line("mesh_ns", [ns(Tm - T0)]), line("polls", [Polls]),
         ["otp ", erlang:system_info(otp_release), "\n"]]
    end).

register_names(Names) ->
    lists:foreach(fun(I) ->
                          yes = global:register_name({otpkit_bench, I}, spawn(fun block/0))
                  end, lists:seq(1, Names)).

%% -> {names first the same everywhere at, A first saw the full mesh at, polls}; polls
%% until both have happened
poll_healed(B, C, Names, Deadline, Polls, NamesAt, MeshAt) ->
    Views = [snapshot(), rpc:call(B, ?MODULE, snapshot, []),
             rpc:call(B, ?MODULE, snapshot_of, [C])],
    T = erlang:monotonic_time(),
    Mesh = lists:sort(nodes()) =:= lists:sort([B, C]),
    MeshAt1 = first(MeshAt, Mesh, T),
    NamesAt1 = first(NamesAt, NamesAt =:= undefined andalso same(Views, Names)
                                  andalso full_same(B, C), T),
    case NamesAt1 =/= undefined andalso MeshAt1 =/= undefined of
        true ->
            {NamesAt1, MeshAt1, Polls};
        false ->
            case erlang:monotonic_time(millisecond) > Deadline of
                true -> exit({not_healed, Views, nodes()});
                false ->
                    timer:sleep(1),
                    poll_healed(B, C, Names, Deadline, Polls + 1, NamesAt1, MeshAt1)
            end
    end.

first(undefined, true, T) -> T;
first(At, _, _) -> At.

same([{Names, H}, {Names, H}, {Names, H}], Names) -> true;
same(_, _) -> false.

%% The hashes agree: check the whole maps once.
full_same(B, C) ->
    Mine = full_snapshot(),
    Mine =:= rpc:call(B, ?MODULE, full_snapshot, [])
        andalso Mine =:= rpc:call(B, ?MODULE, full_snapshot_of, [C]).

full_snapshot() ->
    lists:sort([{N, global:whereis_name(N)} || N <- global:registered_names()]).

snapshot() ->
    S = full_snapshot(),
    {length(S), erlang:phash2(S)}.

snapshot_of(Node) -> rpc:call(Node, ?MODULE, snapshot, []).

full_snapshot_of(Node) -> rpc:call(Node, ?MODULE, full_snapshot, []).

wait_file(Path, TimeoutMs) ->
    wait_until(Path, erlang:monotonic_time(millisecond) + TimeoutMs).

wait_until(Path, Deadline) ->
    case filelib:is_regular(Path) of
        true -> ok;
        false ->
            case erlang:monotonic_time(millisecond) > Deadline of
                true -> exit({no_file, Path});
                false -> timer:sleep(5), wait_until(Path, Deadline)
            end
    end.
